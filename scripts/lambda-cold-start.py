#!/usr/bin/env python3
"""Cold start and warm invocation times of a sosw-rs Lambda binary, measured locally.

    python3 scripts/lambda-cold-start.py BINARY CONFIG.json ENDPOINT [RUNS]

Runs BINARY (e.g. target/release/sosw_worker_assistant) RUNS times (default 10) as Lambda would: it polls a
stand-in Lambda Runtime API served here on 127.0.0.1, with AWS at ENDPOINT (a moto_server) and its config from
CONFIG.json. Each run hands it one WorkerAssistant event for a task that does not exist (a full round trip to the
store, answered with an error) and then a second one, and reports:

- cold: from spawning the process to its first answer (process start, config, AWS clients, one invocation);
- warm: the second invocation alone.
"""
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time

binary, config, endpoint = sys.argv[1:4]
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 10
event = json.dumps({"action": "mark_task_as_completed", "task_id": "0" * 32}).encode()


def runtime_api(answers, cond):
    """A stand-in Lambda Runtime API for one process: two events, then polls wait."""
    served = [0]

    class Runtime(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            with cond:
                served[0] += 1
                n = served[0]
            if n > 2:
                time.sleep(3600)  # the process is killed meanwhile
                return
            self.send_response(200)
            self.send_header("lambda-runtime-aws-request-id", f"req-{n}")
            self.send_header("lambda-runtime-deadline-ms", str(int(time.time() * 1000) + 60_000))
            self.send_header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:1:function:f")
            self.send_header("content-length", str(len(event)))
            self.end_headers()
            self.wfile.write(event)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with cond:
                answers.append(time.perf_counter())
                cond.notify_all()
            self.send_response(202)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


env = dict(os.environ, AWS_LAMBDA_FUNCTION_NAME="f",
           AWS_LAMBDA_FUNCTION_VERSION="$LATEST", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
           AWS_LAMBDA_LOG_STREAM_NAME="s", AWS_LAMBDA_LOG_GROUP_NAME="g", AWS_ENDPOINT_URL=endpoint,
           AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local",
           AWS_EC2_METADATA_DISABLED="true", SOSW_CONFIG=config, RUST_LOG="off")
cold, warm = [], []
for _ in range(runs):
    answers, cond = [], threading.Condition()
    server = runtime_api(answers, cond)
    env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{server.server_port}"
    start = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with cond:
        while len(answers) < 2:
            if not cond.wait(timeout=60):
                proc.kill()
                sys.exit("no answer within 60 s")
        first, second = answers[:2]
    proc.kill()
    proc.wait()
    server.shutdown()
    cold.append((first - start) * 1000)
    warm.append((second - first) * 1000)
print(f"cold start to first answer: median {statistics.median(cold):.1f} ms (min {min(cold):.1f}, max {max(cold):.1f})")
print(f"warm invocation:            median {statistics.median(warm):.1f} ms (min {min(warm):.1f}, max {max(warm):.1f})")

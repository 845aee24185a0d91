"""Python sosw 0.7.51's side of the AWS benchmark.

    python python_sosw.py seed LABOURER COUNT         queue COUNT tasks with sosw's own TaskManager.create_task
    python python_sosw.py orchestrate LABOURER MAX    one Orchestrator pass, as a warm Lambda invocation runs it

AWS_ENDPOINT_URL_DYNAMODB and AWS_ENDPOINT_URL_LAMBDA name the local servers. For `orchestrate`, the interpreter's
start and the imports are not measured (a warm Lambda has paid for them); only the Orchestrator's
pass is. It prints one JSON line: the tasks invoked, the CPU seconds (user + system) and the wall seconds.
"""
import importlib.metadata
import json
import os
import resource
import sys
import time
import types

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")

import logging  # noqa: E402

from sosw.app import global_vars  # noqa: E402
from sosw.orchestrator import Orchestrator  # noqa: E402
from sosw.managers.task import TaskManager  # noqa: E402

# As in a Lambda function, the root logger has a handler (the Lambda runtime's, which ships every line to CloudWatch
# Logs) and sosw's level: INFO, or what SOSW_BENCH_LOG names (`WARNING` for a quiet run). The lines go to stderr.
logging.basicConfig(stream=sys.stderr, format="[%(levelname)s] %(asctime)s %(aws_request_id)s %(message)s")
logging.getLogger().setLevel(os.environ.get("SOSW_BENCH_LOG", "INFO"))
logging.getLogger().handlers[0].addFilter(lambda record: setattr(record, "aws_request_id", "bench") or True)


def config(labourer, maximum):
    return {
        "task_config": {
            "dynamo_db_config": {
                "table_name": "sosw_tasks",
                "skip_glue": True,  # sosw would ask AWS Glue's catalogue for the table's columns first
                "index_greenfield": "sosw_tasks_greenfield",
                "row_mapper": {
                    "task_id": "S", "labourer_id": "S", "created_at": "N", "completed_at": "N", "greenfield": "N",
                    "attempts": "N", "closed_at": "N", "desired_launch_time": "N", "arn": "S", "payload": "S",
                },
                "required_fields": ["task_id", "labourer_id", "created_at", "greenfield"],
                "field_names": {"task_id": "task_id", "labourer_id": "labourer_id", "greenfield": "greenfield"},
            },
            "sosw_closed_tasks_table": "sosw_closed_tasks",
            "sosw_retry_tasks_table": "sosw_retry_tasks",
            "sosw_retry_tasks_greenfield_index": "labourer_id_greenfield",
            "sosw_closed_tasks_labourer_status_index": "labourer_task_status_with_time",
            "ecology_config": {},
            "labourers": {
                labourer: {
                    "arn": f"arn:aws:lambda:us-east-1:000000000000:function:{labourer}",
                    "max_simultaneous_invocations": maximum,
                }
            },
        },
        "meta_handler_config": {"write_meta_to_ddb": True, "dynamo_db_config": {"skip_glue": True}},
    }


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("seed", "orchestrate") or not sys.argv[3].isdigit():
        raise SystemExit("usage: python python_sosw.py seed LABOURER COUNT | orchestrate LABOURER MAX")
    command, labourer, number = sys.argv[1], sys.argv[2], int(sys.argv[3])
    global_vars.lambda_context = types.SimpleNamespace(
        function_name="sosw_orchestrator", aws_request_id="bench", log_stream_name="bench"
    )
    if command == "seed":
        # The tasks are seeded by sosw itself: the benchmark's servers (dynalite) have no transactions, which
        # sosw-rs's idempotent create uses.
        tm = TaskManager(custom_config=config(labourer, number)["task_config"])
        lab = tm.get_labourer(labourer)
        for i in range(number):
            tm.create_task(lab, payload={"n": i})
        print(json.dumps({"seeded": number}))
        return
    # A warm Lambda keeps its Orchestrator between invocations: only the pass is measured.
    orchestrator = Orchestrator(custom_config=config(labourer, number))
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    orchestrator({})
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    invoked = orchestrator.task_client.stats.get("invoked_tasks", 0)
    peer = f"sosw {importlib.metadata.version('sosw')}"
    print(json.dumps({"peer": peer, "invoked": invoked, "cpu_seconds": cpu, "seconds": seconds}))


if __name__ == "__main__":
    main()

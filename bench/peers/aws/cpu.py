"""Runs a command and prints its CPU seconds (user + system, of it and its children) and wall seconds as JSON.

    python3 cpu.py OUT_FILE -- COMMAND [ARGS...]      (the command's stdout goes to OUT_FILE, its stderr is kept)
"""
import json
import resource
import subprocess
import sys
import time

if len(sys.argv) < 4 or sys.argv[2] != "--":
    raise SystemExit("usage: python3 cpu.py OUT_FILE -- COMMAND [ARGS...]")
before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
with open(sys.argv[1], "wb") as out:
    code = subprocess.run(sys.argv[3:], stdout=out).returncode
seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(json.dumps({"cpu_seconds": cpu, "seconds": seconds, "exit": code}))
sys.exit(code)

"""Python sosw 0.7.51 as the other half of a mixed fleet, for sosw-rs's tests.

    python sosw_fleet.py create <table prefix> <labourer> <count>   -> the created task ids (JSON)
    python sosw_fleet.py queued <table prefix> <labourer>           -> the queued tasks Python sees (JSON)

The endpoint comes from AWS_ENDPOINT_URL (a local moto_server).
"""
import json
import os
import sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")

from sosw.managers.task import TaskManager  # noqa: E402


def manager(prefix, labourer):
    config = {
        "dynamo_db_config": {
            "table_name": f"{prefix}sosw_tasks",
            "index_greenfield": "sosw_tasks_greenfield",
            "row_mapper": {
                "task_id": "S", "labourer_id": "S", "created_at": "N", "completed_at": "N", "greenfield": "N",
                "attempts": "N", "closed_at": "N", "desired_launch_time": "N", "arn": "S", "payload": "S",
            },
            "required_fields": ["task_id", "labourer_id", "created_at", "greenfield"],
            "field_names": {"task_id": "task_id"},
        },
        "sosw_closed_tasks_table": f"{prefix}sosw_closed_tasks",
        "sosw_retry_tasks_table": f"{prefix}sosw_retry_tasks",
        "labourers": {labourer: {"arn": f"arn:aws:lambda:us-east-1:000000000000:function:{labourer}"}},
    }
    tm = TaskManager(custom_config=config)
    return tm, tm.get_labourer(labourer)


def main():
    command, prefix, labourer = sys.argv[1:4]
    tm, lab = manager(prefix, labourer)
    if command == "create":
        ids = []
        for i in range(int(sys.argv[4])):
            task = tm.create_task(lab, payload={"n": i, "from": "python"})
            ids.append(task["task_id"])
        print(json.dumps(ids))
    elif command == "queued":
        lab.set_custom_attribute("start", 2_000_000_000)
        print(json.dumps(tm.get_next_for_labourer(lab, cnt=1000), default=str))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()

#!/bin/sh
# The smallest sosw worker: the task's event arrives on stdin as one JSON object.
# Exit status 0 reports the task completed (stdout, if a JSON object, becomes `result_<k>` fields);
# any other exit reports it failed.
event=$(cat)
echo "{\"echoed_bytes\": ${#event}}"

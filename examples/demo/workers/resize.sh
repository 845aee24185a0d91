#!/bin/sh
# Demo worker "resize": the task's event arrives on stdin as one JSON object; exit status 0 reports success.
event=$(cat)
n=$(printf '%s' "$event" | sed -n 's/.*"n": *\([0-9][0-9]*\).*/\1/p')
attempts=$(printf '%s' "$event" | sed -n 's/.*"attempts": *\([0-9][0-9]*\).*/\1/p')
# Every 97th image is corrupt: it fails on every attempt and is closed as dead after max_attempts.
if [ $((n % 97)) -eq 0 ]; then
  echo "image $n is corrupt" >&2
  exit 1
fi
# Every 13th hits a flaky network on its first attempt: it expires, waits in the retry table, then succeeds.
if [ $((n % 13)) -eq 0 ] && [ "$attempts" = "0" ]; then
  echo "timeout fetching image $n" >&2
  exit 1
fi
echo "{\"resized\": $n}"

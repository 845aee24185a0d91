#!/bin/sh
# Demo worker "reports": a heavy query against a database whose CPU is the labourer's health metric.
event=$(cat)
n=$(printf '%s' "$event" | sed -n 's/.*"n": *\([0-9][0-9]*\).*/\1/p')
sleep 0.05
echo "{\"rows\": $((n * 7))}"

#!/usr/bin/env bash
# VNN-COMP `run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT`: answer the instance and write
# RESULTS_FILE: `sat` and the counterexample `((X_0 v) ... (Y_0 v) ...)` on the lines after it, `unsat`, `timeout`
# or `unknown` (`error`, exit code 2, for files that cannot be answered: unreadable, unsupported op, sizes that do
# not fit). The timeout counts from this script's start (Python's start and reading the files included), and the
# process ends within it. The last run's folder (result.json, report.html) is kept in vnncomp/.run/last.
START=$(date +%s.%N)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
expect_args 6 "run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT" "$@"
mkdir -p "$RUN"
echo "$$" > "$RUN/pid"  # this process becomes Python: prepare_instance.sh ends it if it outlives its instance
exec "$PY" -m netinvert solve "$3" "$4" --timeout "$6" --started-at "$START" --result-file "$5" --out "$RUN/last"

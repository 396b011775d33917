#!/usr/bin/env bash
# VNN-COMP `prepare_instance.sh v1 CATEGORY ONNX VNNLIB`: end a run of ours still alive from an earlier instance,
# then read the network and the spec (plain or .gz) and check that they fit and that the solver reads the network
# (`netinvert solve --check`: no analysis; it also warms the file caches for the run). Exit 0 when ready.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
expect_args 4 "prepare_instance.sh v1 CATEGORY ONNX VNNLIB" "$@"

if [ -f "$RUN/pid" ]; then  # the process run_instance.sh became; checked to be ours before it is ended
    pid=$(cat "$RUN/pid")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null \
            | grep -q "netinvert solve"; then
        echo "ending an earlier run (pid $pid)"
        kill -TERM "$pid" 2>/dev/null
        sleep 1
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$RUN/pid"
fi
exec "$PY" -m netinvert solve "$3" "$4" --check

# Sourced by prepare_instance.sh and run_instance.sh: the argument checks of the VNN-COMP calling convention, the
# interpreter with netinvert (PY: the repository's .venv, or NETINVERT_PYTHON) and the folder of the last run (RUN:
# vnncomp/.run, or NETINVERT_VNNCOMP_RUN).
expect_args() {  # expect_args COUNT USAGE ARG...: exit 1 unless ARG... is "v1" and COUNT - 1 more arguments
    local count=$1 usage=$2
    shift 2
    if [ "${1:-}" != v1 ]; then
        echo "Expected first argument (version string) 'v1', got '${1:-}'" >&2
        exit 1
    fi
    if [ $# -ne "$count" ]; then
        echo "usage: $usage" >&2
        exit 1
    fi
}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${NETINVERT_PYTHON:-$(dirname "$HERE")/.venv/bin/python}
RUN=${NETINVERT_VNNCOMP_RUN:-$HERE/.run}

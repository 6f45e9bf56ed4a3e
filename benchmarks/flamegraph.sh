#!/bin/sh
# A py-spy flame graph of a pyxenstored daemon serving sequential READs and WRITEs, over
# its Unix socket or over a simulated guest's ring (issue 10 item 1).
#
#   benchmarks/flamegraph.sh socket OUT.svg [SRC]
#   benchmarks/flamegraph.sh ring OUT.svg [SRC]
#
# SRC: the package source to run (default: this checkout's src/), e.g. an older commit's
# from `git archive <commit> src | tar -x -C /tmp/old` (then SRC=/tmp/old/src), so that
# "before" and "after" graphs come from one command. $PY_SPY names py-spy (default: the
# one on $PATH; it is not a dependency of the project: `pip install py-spy` in a venv of
# its own). $ITERATIONS: round trips per operation (default 40000); $RATE: samples/s
# (default 500). As compare.py does, the daemon runs on CPU 1 and the load on CPU 0
# ($DAEMON_CPUS, $LOAD_CPUS; NO_PIN=1: not pinned). The graph is wall-clock samples of
# the daemon's Python (and native, uvloop's, as py-spy sees it: idle time in epoll shows
# up as `run_forever`).
set -eu
MODE=${1:?usage: flamegraph.sh socket|ring OUT.svg [SRC]}
OUT=${2:?usage: flamegraph.sh socket|ring OUT.svg [SRC]}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
SRC=${3:-$REPO/src}
PY=$REPO/.venv/bin/python
PY_SPY=${PY_SPY:-py-spy}
ITERATIONS=${ITERATIONS:-40000}
RATE=${RATE:-500}
DIR=$(mktemp -d /tmp/flame-XXXXXX)
PIN_DAEMON=""; PIN_LOAD=""
if [ -z "${NO_PIN:-}" ] && command -v taskset >/dev/null; then
    PIN_DAEMON="taskset -c ${DAEMON_CPUS:-1}"; PIN_LOAD="taskset -c ${LOAD_CPUS:-0}"
fi
trap 'kill "$DAEMON" 2>/dev/null || true; rm -rf "$DIR"' EXIT

case $MODE in
    socket) set -- ;;
    ring) set -- --sim-xen "$DIR/fakexen" ;;
    *) echo "flamegraph.sh: mode is socket or ring" >&2; exit 2 ;;
esac
FAKEXEN_NDOMS=4096 PYTHONPATH=$SRC $PIN_DAEMON "$PY" -m pyxenstored -N --socket "$DIR/socket" "$@" \
    >"$DIR/daemon.log" 2>&1 &
DAEMON=$!
i=0
while [ ! -S "$DIR/socket" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat "$DIR/daemon.log" >&2; exit 1; }
    sleep 0.1
done
"$PY_SPY" record --pid "$DAEMON" --rate "$RATE" --format flamegraph --output "$OUT" \
    --nonblocking >"$DIR/py-spy.log" 2>&1 &
SPY=$!
sleep 1
if [ "$MODE" = socket ]; then
    $PIN_LOAD "$PY" "$HERE/xsload.py" --socket "$DIR/socket" --daemon-pid "$DAEMON" \
        latency --iterations "$ITERATIONS"
else
    $PIN_LOAD "$PY" "$HERE/rings.py" --socket "$DIR/socket" --daemon-pid "$DAEMON" \
        latency --iterations "$ITERATIONS"
fi
kill -INT "$SPY"
wait "$SPY" || { cat "$DIR/py-spy.log" >&2; exit 1; }
echo "flame graph: $OUT"

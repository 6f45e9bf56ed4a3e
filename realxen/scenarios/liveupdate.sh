#!/bin/bash
# liveupdate: the daemon replaces itself with `xenstore-control live-update` (Debian's stock
# tool) while a guest runs and holds a watch, across implementations: pyxenstored ->
# pyxenstored -> C xenstored -> pyxenstored when the suite runs pyxenstored, C xenstored ->
# pyxenstored -> C xenstored in the control run. After every step the daemon is the same
# process and answers; at the end the guest's watch still fires, and a new guest starts
# (dom0's own ring, xenconsoled and libxl all went through the updates).
source "$PXS_HOME/dom0/lib.sh"
PY=$PXS_CHECKOUT/.venv/bin/pyxenstored
C=$XENBIN/xenstored
if is_pyxenstored; then steps="$PY $C $PY"; else steps="$PY $C"; fi
pid=$(cat /run/xen/xenstored.pid)
GUEST_STEPS=hello,ack,bye GUEST_ARGS=pxs_wait=300 create held || die "xl create failed"
d=$(domid held)
xs_wait "/local/domain/$d/data/hello" 60 >/dev/null || { show_console held; die "no data/hello"; }
# the guest now waits on a watch for data/ack
sleep 2
xenstore-write /lu/before kept || die "cannot write"
# C xenstored logs only to syslog, and dom0 has none: catch what the daemons say there
python3 -u -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
with open(sys.argv[1], "ab", buffering=0) as out:
    while True:
        out.write(s.recv(65536).rstrip(b"\n") + b"\n")
' "$PXS_SCENARIO_DIR/syslog.log" &
until_true 10 test -S /dev/log
n=0
for binary in $steps; do
    n=$((n + 1))
    t0=$(uptime_s)
    # Each new daemon says what it does (what a failure below needs; never seen by the
    # guests): a pyxenstored gets a log and a trace (-T, C's option for it), through -c.
    # A C xenstored gets no -c: as operators run it, it inherits the command line of the
    # pyxenstored before it, of which only C's options go on (its trace among them).
    lu=(xenstore-control live-update)
    if [ "$binary" = "$C" ]; then
        current_log=$PXS_SCENARIO_DIR/trace.log
    else
        current_log=$PXS_SCENARIO_DIR/py-$n.log
        lu+=(-c "--pid-file /var/run/xen/xenstored.pid --log-file $current_log -T $PXS_SCENARIO_DIR/trace.log")
    fi
    timeout 120 "${lu[@]}" -t 30 "$binary" > "$PXS_SCENARIO_DIR/lu-$n.log" 2>&1
    rc=$?
    log "live update $n to $binary: rc=$rc in $(elapsed "$t0")s: $(tr '\n' ' ' < "$PXS_SCENARIO_DIR/lu-$n.log")"
    [ $rc = 0 ] || { tail -20 "$PXS_SCENARIO_DIR/syslog.log" | sed 's/^/  syslog: /'; die "live update $n failed"; }
    figure "update_${n}_s" "$(elapsed "$t0")"
    if ! until_true 30 answering; then
        tail -20 "$PXS_SCENARIO_DIR/syslog.log" | sed 's/^/  syslog: /' >> "$PXS_LOG"
        { echo "state: $(grep -E '^(State|Name)' "/proc/$pid/status" | tr '\n' ' ') wchan $(cat "/proc/$pid/wchan")"
          ls -l "/proc/$pid/fd"; } 2>&1 | sed 's/^/  daemon: /' >> "$PXS_LOG"
        die "not answering after update $n"
    fi
    [ "$(cat /run/xen/xenstored.pid 2>/dev/null)" = "$pid" ] || log "pid file now says $(cat /run/xen/xenstored.pid 2>/dev/null) (was $pid)"
    kill -0 "$pid" 2>/dev/null || die "the daemon process $pid is gone after update $n"
    [ "$(readlink /proc/$pid/exe)" != "" ] && log "process $pid now runs $(tr '\0' ' ' < /proc/$pid/cmdline | cut -c1-150)"
    [ "$(xenstore-read /lu/before)" = kept ] || die "a node was lost in update $n"
done
# stuck NAME: what is known of a guest whose requests went unanswered
stuck() {
    local d; d=$(domid "$1")
    show_console "$1"
    evtchn_report "$1"
    is_pyxenstored && log "stats/domain/$d: $(timeout 10 xenstore-read "/tool/xenstored/stats/domain/$d" 2>&1 | tr '\n' ' ')"
    timeout 10 xenstore-ls -f "/local/domain/$d/data" 2>&1 | sed 's/^/  data: /' | tee -a "$PXS_LOG"
    # libxl's per-domain processes (the one that destroys a guest that powered off)
    ps -eo pid,stat,args | grep -E '[x]l |[x]enconsoled' | sed 's/^/  ps: /' | tee -a "$PXS_LOG"
    # what the daemon last did (C's trace, or pyxenstored's log)
    tail -n 40 "$current_log" 2>/dev/null | grep -v '^wrl:' | sed 's/^/  daemon: /' | tee -a "$PXS_LOG"
}
roundtrip held 120 || { stuck held; die "the guest's watch did not fire after the updates"; }
wait_gone held 60 || { stuck held; die "guest did not go"; }
create after || die "xl create after the updates failed"
roundtrip after 60 || { stuck after; die "the new guest's round trip failed"; }
wait_gone after 60 || { stuck after; die "new guest did not go"; }
check_daemon || die "daemon not answering"
log "LIVEUPDATE PASS"

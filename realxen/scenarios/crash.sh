#!/bin/bash
# crash (pyxenstored only: no other xenstored survives its own crash): with a guest running
# and waiting on a watch, the daemon is killed with SIGKILL and started again the way a
# host starts it (Debian's launch-xenstore, after removing the pid file the dead daemon
# left, which launch-xenstore would take for a running one). The journal brings back every
# node, the guest's ring and watch: dom0's answer reaches the guest, and a new guest starts
# (xenconsoled, a socket client, is started again, as socket clients must reconnect; the
# `xl` process that watched the first guest died with its connection, so it is destroyed
# by hand).
source "$PXS_HOME/dom0/lib.sh"
is_pyxenstored || die "crash recovery is pyxenstored's alone (the suite runs this for pyxenstored only)"
GUEST_STEPS=hello,ack,bye GUEST_ARGS=pxs_wait=300 create held || die "xl create failed"
d=$(domid held)
xs_wait "/local/domain/$d/data/hello" 60 >/dev/null || { show_console held; die "no data/hello"; }
sleep 2  # the guest now waits on its watch for data/ack
xenstore-write /crash/committed before-the-crash || die "cannot write"
pid=$(cat /run/xen/xenstored.pid)
t0=$(uptime_s)
kill -9 "$pid" || die "cannot kill $pid"
until_true 10 sh -c "! kill -0 $pid 2>/dev/null" || die "$pid survived SIGKILL"
log "daemon $pid killed"
rm -f /run/xen/xenstored.pid
if [ -n "${NOTIFY_SOCKET:-}" ] || [ -S /run/pxs-notify ]; then
    PATH=$PXS_SCRATCH/bin:$PATH NOTIFY_SOCKET=/run/pxs-notify \
        timeout 120 /etc/xen/scripts/launch-xenstore > "$PXS_SCENARIO_DIR/launch-xenstore.log" 2>&1
else
    timeout 120 /etc/xen/scripts/launch-xenstore > "$PXS_SCENARIO_DIR/launch-xenstore.log" 2>&1
fi
rc=$?
[ $rc = 0 ] || die "launch-xenstore rc=$rc: $(cat "$PXS_SCENARIO_DIR/launch-xenstore.log")"
until_true 60 answering || die "the restarted daemon does not answer"
figure restart_s "$(elapsed "$t0")"
log "restarted as $(cat /run/xen/xenstored.pid) after $(elapsed "$t0")s"
[ "$(xenstore-read /crash/committed)" = before-the-crash ] || die "a committed node was lost"
xenstore-exists "/local/domain/$d/data/hello" || die "the guest's nodes were lost"
# xenconsoled's connection died with the daemon: start it again (it may linger, deaf)
pkill -x xenconsoled; until_true 10 sh -c '! pgrep -x xenconsoled >/dev/null'
xenconsoled --log=guest --log-dir="$PXS_OUT/console" || die "cannot start xenconsoled again"
roundtrip held 120 || { show_console held; die "the guest's watch did not fire after the restart"; }
# The `xl create` process that would have destroyed the guest at power-off was a socket
# client of the dead daemon and is gone with its connection: destroy it by hand, as an
# operator would, and the daemon forgets it.
until_true 60 sh -c "xl list held 2>/dev/null | awk 'NR == 2 { exit !(\$5 ~ /s/) }'" \
    || log "held did not report its shutdown; destroying it anyway"
destroy_held=$(domid held)
timeout 60 xl destroy held || die "xl destroy held failed"
wait_gone held 60 || die "guest did not go"
until_true 20 sh -c "! xenstore-exists /local/domain/$destroy_held" || die "the dead guest's nodes stayed"
create after || die "xl create after the crash failed"
roundtrip after 60 || { show_console after; die "round trip of a new guest failed"; }
wait_gone after 60 || die "new guest did not go"
check_daemon || die "daemon not answering"
log "CRASH PASS"

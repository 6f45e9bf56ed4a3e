#!/bin/bash
# dom0's PID 1 after the chroot (this machine's / read-only under a tmpfs overlay; settings
# from /pxs/out/.run/env.sh). Prepares dom0 as a Xen host's boot would (devpts, xenfs, /run,
# what udev would make), installs the daemon under test as the host's xenstored through
# Debian's launch-xenstore with only XENSTORED changed in /etc/default/xencommons, runs
# xen-init-dom0 and xenconsoled (as the xencommons init script does), then every scenario in
# $PXS_SCENARIOS. Results: $PXS_OUT/scenarios/NAME/{status,log,figures}, $PXS_OUT/.run/status.
# QEMU is then left through isa-debug-exit.
export HOME=/root TERM=dumb LANG=C.UTF-8
source "$PXS_HOME/dom0/lib.sh"
RUN=$PXS_OUT/.run

leave_qemu() {
    sync
    printf "\\$(printf %o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    sleep 2
    poweroff -f
}

mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=666,gid=5,mode=620 devpts /dev/pts  # xenconsoled's guest ttys
mount -t tmpfs tmpfs /dev/shm
mount -t xenfs xenfs /proc/xen || log "xenfs mount failed"
mount -t tmpfs tmpfs /run
rm -rf /var/log/xen  # the host's own logs (this is its /, under an overlay) are not ours
mkdir -p /run/xen /run/xenstored /run/lock /run/xen-hotplug /var/log/xen /var/lib/xen "$PXS_SCRATCH"
# what udev would make; the hotplug scripts' locking stats /dev/stdin
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p "$PXS_OUT/console" "$PXS_OUT/scenarios"
touch "$RUN/started"
log "dom0 up: kernel $(uname -r), xsd_port $(cat /proc/xen/xsd_port 2>/dev/null), daemon $PXS_DAEMON"
cd "$PXS_CHECKOUT" || cd /

# -- the daemon, as a host starts it -------------------------------------------------------
case $PXS_DAEMON in
    pyxenstored) XENSTORED=$PXS_CHECKOUT/.venv/bin/pyxenstored ;;
    cxenstored) XENSTORED=/usr/sbin/xenstored ;;
    *) log "unknown daemon $PXS_DAEMON"; echo 2 > "$RUN/status"; leave_qemu 2 ;;
esac
{
    grep -v '^XENSTORED=' /etc/default/xencommons 2>/dev/null
    echo "XENSTORED=$XENSTORED"
    # a debugging knob only (e.g. "-T /var/log/xen/xenstored-trace.log"); the suite sets none
    [ -n "${PXS_XENSTORED_ARGS:-}" ] && echo "XENSTORED_ARGS=\"$PXS_XENSTORED_ARGS\""
} > "$PXS_SCRATCH/xencommons"
cp "$PXS_SCRATCH/xencommons" /etc/default/xencommons
started=0
T0=$(uptime_s)
if [ "${PXS_NOTIFY:-$([ "$PXS_DAEMON" = pyxenstored ] && echo 1 || echo 0)}" = 1 ]; then
    # systemd's way (xenstored.service: Type=notify, NotifyAccess=all): launch-xenstore sees
    # `systemd-notify --booted` succeed, and the service is up when READY=1 arrives.
    mkdir -p "$PXS_SCRATCH/bin"
    printf '#!/bin/sh\n[ "$1" = --booted ] && exit 0\nexit 1\n' > "$PXS_SCRATCH/bin/systemd-notify"
    chmod +x "$PXS_SCRATCH/bin/systemd-notify"
    python3 -u -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        out.write(s.recv(4096).replace(b"\n", b" ") + b"\n")
' /run/pxs-notify "$PXS_OUT/notify.log" &
    until_true 10 test -S /run/pxs-notify
    log "starting $XENSTORED through launch-xenstore (NOTIFY_SOCKET, as under systemd)"
    PATH=$PXS_SCRATCH/bin:$PATH NOTIFY_SOCKET=/run/pxs-notify \
        timeout 120 /etc/xen/scripts/launch-xenstore > "$PXS_OUT/launch-xenstore.log" 2>&1
    rc=$?
    if [ $rc = 0 ] && until_true 90 grep -q 'READY=1' "$PXS_OUT/notify.log"; then started=1
    else log "launch-xenstore rc=$rc; READY=1 $(grep -c READY=1 "$PXS_OUT/notify.log" 2>/dev/null) times"; fi
else
    log "starting $XENSTORED through launch-xenstore (pid file, as an init script does)"
    timeout 120 /etc/xen/scripts/launch-xenstore > "$PXS_OUT/launch-xenstore.log" 2>&1 && started=1
fi
if [ $started = 1 ] && until_true 60 answering; then
    log "xenstored up and answering after $(elapsed "$T0")s (pid $(cat /run/xen/xenstored.pid))"
    echo "daemon_start_s=$(elapsed "$T0")" >> "$RUN/figures"
    if timeout 60 xen-init-dom0 > "$PXS_OUT/xen-init-dom0.log" 2>&1 \
        && xenconsoled --log=guest --log-dir="$PXS_OUT/console" > "$PXS_OUT/xenconsoled.log" 2>&1; then
        log "dom0 initialised (xen-init-dom0, xenconsoled)"
        # Xen's own advice for a host: dom0 weighs more than a guest, so that booting
        # guests do not take the CPU from the services they wait on (xenstored,
        # xenconsoled, libxl). Under TCG a booting guest is CPU-bound for a minute, and
        # with dom0 at a guest's weight its vCPUs lost 55-70 % of their time to eight of
        # them (top's "st"); xenconsoled then set up the last console after libxl's fixed
        # 10 s. The same for every daemon.
        xl sched-credit2 -d 0 -w 2048 > /dev/null 2>&1 || xl sched-credit -d 0 -w 2048 > /dev/null 2>&1 \
            || log "could not raise dom0's scheduler weight"
    else
        started=0; log "xen-init-dom0 or xenconsoled failed"
    fi
else
    started=0; log "xenstored did not start"; sed 's/^/  launch: /' "$PXS_OUT/launch-xenstore.log"
fi

# -- the scenarios ---------------------------------------------------------------------------
suite=0
for name in $PXS_SCENARIOS; do
    dir=$PXS_OUT/scenarios/$name
    mkdir -p "$dir"
    : > "$dir/log"
    if [ $started != 1 ]; then
        echo "xenstored did not start (see launch-xenstore.log)" > "$dir/log"; echo 1 > "$dir/status"; suite=1; continue
    fi
    # tool starts Python some 25 times (dom0 over 9p, a guest under TCG): ~5 min when loaded
    limit=${PXS_SCENARIO_TIMEOUT:-300}
    [ "$name" = tool ] && limit=${PXS_TOOL_TIMEOUT:-540}
    # bootstorm: eight domains built in parallel under TCG (see CREATE_TIMEOUT there)
    [ "$name" = bootstorm ] && limit=${PXS_BOOTSTORM_TIMEOUT:-480}
    log "scenario $name: start (bound ${limit}s)"
    PXS_LOG=$dir/log PXS_SCENARIO_DIR=$dir timeout -k 5 "$limit" \
        /bin/bash "$PXS_HOME/scenarios/$name.sh" < /dev/null
    rc=$?
    [ $rc = 124 ] && echo "scenario timed out" >> "$dir/log"
    echo $rc > "$dir/status"
    log "scenario $name: status $rc"
    [ $rc = 0 ] || suite=1
    # a scenario's leftovers must not disturb the next one
    for g in $(xl list 2>/dev/null | awk 'NR > 2 { print $1 }'); do timeout 60 xl destroy "$g" 2>/dev/null; done
done

# -- logs for a post-mortem (bounded) ------------------------------------------------------
cp /var/log/xen/*.log "$PXS_OUT/" 2>/dev/null
dmesg > "$PXS_OUT/dom0-dmesg.txt" 2>&1
timeout 10 xl dmesg > "$PXS_OUT/xen-dmesg.txt" 2>&1
cp /var/log/xen/xen-hotplug.log "$PXS_OUT/" 2>/dev/null
echo $suite > "$RUN/status"
log "suite done: status $suite"
leave_qemu $suite

# dom0/lib.sh: helpers for the real-Xen scenarios (bash, sourced in dom0).
# Every wait is bounded. Settings come from the environment (PXS_*; see xenqemu.py).
[ -n "${PXS_LIB:-}" ] && return 0
PXS_LIB=1
XENBIN=$(ls -d /usr/lib/xen-4.*/bin 2>/dev/null | sort -V | tail -1)
export XENSTORED_PATH=/run/xenstored/socket
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$XENBIN
: "${PXS_OUT:=/pxs/out}" "${PXS_SCRATCH:=/run/pxs}"
mkdir -p "$PXS_SCRATCH"

uptime_s() { cut -d' ' -f1 /proc/uptime; }
# elapsed T0: seconds since an uptime_s reading, one decimal
elapsed() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }
# log MSG: a line on the console and in the current scenario's log ($PXS_LOG)
log() {
    local line="PXS[$(uptime_s)] $*"
    echo "$line"
    [ -n "${PXS_LOG:-}" ] && echo "$line" >> "$PXS_LOG"
    return 0
}
die() { log "FAIL: $*"; exit 1; }
# figure KEY VALUE: a measured figure of the current scenario (read by the host)
figure() { echo "$1=$2" >> "$PXS_SCENARIO_DIR/figures"; log "figure $1=$2"; }

# How often until_true and xs_wait look again. Each look starts processes, which cost
# dom0 noticeable CPU under TCG (a fork is many hypercalls in a PV dom0); the bootstorm,
# with eight waits at once, looks less often.
POLL_S=0.2
# now_cs: NOW_CS = centiseconds since boot, read without starting a process (the waits
# below read the clock on every look)
now_cs() { local up; read -r up _ < /proc/uptime; NOW_CS=$((10#${up/./})); }
# until_true SECONDS CMD...: run CMD every $POLL_S s until it succeeds or time runs out
until_true() {
    local end; now_cs; end=$((NOW_CS + $1 * 100)); shift
    until "$@"; do
        now_cs; [ "$NOW_CS" -ge "$end" ] && return 1
        sleep "$POLL_S"
    done
}
# xs_wait PATH [SECONDS=30]: wait until PATH exists, print its value
xs_wait() {
    local end; now_cs; end=$((NOW_CS + ${2:-30} * 100))
    while :; do
        xenstore-read "$1" 2>/dev/null && return 0
        now_cs; [ "$NOW_CS" -ge "$end" ] && return 1
        sleep "$POLL_S"
    done
}

# cpu_seconds PID: user + system CPU time the process has used so far
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
daemon_alive() { [ -f /run/xen/xenstored.pid ] && kill -0 "$(cat /run/xen/xenstored.pid)" 2>/dev/null; }
answering() { timeout 10 xenstore-read / >/dev/null 2>&1; }
is_pyxenstored() { [ "$PXS_DAEMON" = pyxenstored ]; }
# stat NAME: one of pyxenstored's /tool/xenstored/stats counters (empty for C xenstored)
stat_value() { is_pyxenstored && timeout 10 xenstore-read "/tool/xenstored/stats/$1" 2>/dev/null; }

# guest_cfg NAME [LINE...]: an xl config for a PV guest running guest/init.sh; prints its path.
# The guest's steps come from $GUEST_STEPS (kernel command line pxs_steps=...).
guest_cfg() {
    local name=$1 cfg=$PXS_SCRATCH/$1.cfg; shift
    {
        echo "name = \"$name\""
        echo 'type = "pv"'
        echo "kernel = \"$PXS_GUEST_KERNEL\""
        echo "ramdisk = \"$PXS_GUEST_INITRD\""
        echo "memory = ${GUEST_MEM:-128}"
        echo 'vcpus = 1'
        echo "extra = \"console=hvc0 quiet loglevel=3 pxs_steps=${GUEST_STEPS:-hello,ack,bye} ${GUEST_ARGS:-}\""
        echo 'on_poweroff = "destroy"'
        echo 'on_reboot = "destroy"'
        echo 'on_crash = "destroy"'
        for line in "$@"; do echo "$line"; done
    } > "$cfg"
    echo "$cfg"
}
# create NAME [LINE...]: xl create, bounded ($CREATE_TIMEOUT s, default 120), at niceness
# $CREATE_NICE (default 0); sets CREATE_S; log in xl-create-NAME.log
create() {
    local name=$1 cfg t0 rc; cfg=$(guest_cfg "$@")
    t0=$(uptime_s)
    timeout "${CREATE_TIMEOUT:-120}" nice -n "${CREATE_NICE:-0}" xl -v create "$cfg" > "$PXS_SCENARIO_DIR/xl-create-$name.log" 2>&1; rc=$?
    CREATE_S=$(elapsed "$t0")
    if [ $rc = 0 ]; then log "xl create $name: ok in ${CREATE_S}s, domid $(domid "$name")"
    else log "xl create $name: rc=$rc after ${CREATE_S}s"; tail -5 "$PXS_SCENARIO_DIR/xl-create-$name.log" | sed "s/^/  xl: /"
    fi
    return $rc
}
domid() { xl domid "$1" 2>/dev/null; }
exists_domain() { xl domid "$1" >/dev/null 2>&1; }
gone() { ! exists_domain "$1"; }
# wait_gone NAME [SECONDS=60]
wait_gone() { until_true "${2:-60}" gone "$1" || { log "$1 still exists after ${2:-60}s"; return 1; }; }
# evtchn_report NAME: what Xen says of dom0's and NAME's event channels (pending/masked
# bits, the peer of each port), for a guest whose requests go unanswered: the full dump
# in the scenario's directory, NAME's ports and dom0's ports to NAME in the log
evtchn_report() {
    local d f
    d=$(domid "$1") || { log "evtchn_report: no domain $1"; return 0; }
    f="$PXS_SCENARIO_DIR/evtchn-$1.txt"
    xl debug-keys e >/dev/null 2>&1
    sleep 1
    xl dmesg > "$f" 2>&1
    awk -v d="$d" '
        /Event channel information for domain/ { dom = $NF; sub(":", "", dom); next }
        dom == d && / s=/ { print "  evtchn dom" d ": " $0; next }
        dom == "0" && (/ d=/ && $0 ~ (" d=" d " ")) { print "  evtchn dom0: " $0 }
    ' "$f" | tail -40 | tee -a "$PXS_LOG"
    grep -c . "$f" | sed 's/^/  evtchn dump lines: /' >> "$PXS_LOG"
}
console_of() { tr -d '\r' < "$PXS_OUT/console/guest-$1.log" 2>/dev/null; }
show_console() { console_of "$1" | sed "s/^/  console($1): /" | tee -a "$PXS_LOG"; }

# roundtrip NAME [SECONDS=60]: dom0's half of hello,ack,bye: wait for data/hello, answer
# data/ack, wait for data/result, say data/bye. 0 iff the guest's result is PASS.
roundtrip() {
    local name=$1 t=${2:-60} d hello result
    d=$(domid "$name") || { log "$name: no such domain"; return 1; }
    hello=$(xs_wait "/local/domain/$d/data/hello" "$t") || { log "$name: no data/hello in ${t}s"; return 1; }
    xenstore-write "/local/domain/$d/data/ack" "ack-from-dom0" || { log "$name: cannot write data/ack"; return 1; }
    result=$(xs_wait "/local/domain/$d/data/result" "$t") || { log "$name: no data/result in ${t}s"; return 1; }
    xenstore-write "/local/domain/$d/data/bye" bye || true
    log "$name (dom$d): hello='$hello' result='$result'"
    [ "$result" = PASS ]
}

# check_daemon: fail unless the daemon still runs and answers
check_daemon() {
    daemon_alive && answering && return 0
    log "xenstored is not alive and answering; its log:"
    tail -20 /var/log/xen/pyxenstored.log 2>/dev/null | sed 's/^/  xenstored: /'
    return 1
}

#!/bin/bash
# bootstorm: $PXS_GUESTS (default 8) PV guests created by parallel `xl create`; every guest's
# round trip completes, and pyxenstored answers no EAGAIN (its statistics nodes).
source "$PXS_HOME/dom0/lib.sh"
n=${PXS_GUESTS:-8}
# Under TCG, building a domain is CPU-bound for seconds (it is milliseconds on hardware), so
# n parallel `xl create` starve xenconsoled, which serves one console at a time, and libxl
# gives up on a console tty after 10 s. The builders run at a lower priority, for every
# daemon alike, so that what is measured is xenstored, not the emulated CPU.
CREATE_NICE=10
refused_before=$(stat_value transactions/refused)
committed_before=$(stat_value transactions/committed)
daemon_pid=$(cat /run/xen/xenstored.pid)
cpu_before=$(cpu_seconds "$daemon_pid")
top -b -d 2 -n 60 > "$PXS_SCENARIO_DIR/top.log" 2>&1 &
sampler=$!
if [ -n "${PXS_PROFILE:-}" ] && [ -x "$PXS_CHECKOUT/.venv/bin/py-spy" ] && is_pyxenstored; then
    # a debugging knob: where the daemon's CPU goes during the storm (collapsed stacks)
    "$PXS_CHECKOUT/.venv/bin/py-spy" record --nonblocking --format raw -r 50 -d 60 \
        -o "$PXS_SCENARIO_DIR/profile.txt" --pid "$daemon_pid" > "$PXS_SCENARIO_DIR/py-spy.log" 2>&1 &
fi
t0=$(uptime_s)
one() {  # one guest: create, wait for its first write, round trip, gone; times in bs$1.times
    local name=bs$1 s=$(uptime_s)
    create "$name" || return 1
    local d; d=$(domid "$name")
    xs_wait "/local/domain/$d/data/hello" 120 >/dev/null || return 1
    echo "first_write $(elapsed "$s")" > "$PXS_SCRATCH/$name.times"
    roundtrip "$name" 120 || return 1
    wait_gone "$name" 120
}
pids=
for i in $(seq 1 "$n"); do one "$i" & pids="$pids $!"; done
failed=0
for p in $pids; do wait "$p" || failed=$((failed + 1)); done
figure wall_s "$(elapsed "$t0")"
kill $sampler 2>/dev/null
figure daemon_cpu_s "$(awk -v a="$cpu_before" -v b="$(cpu_seconds "$daemon_pid")" 'BEGIN { printf "%.1f", b - a }')"
figure guests "$n"
times=$(cat "$PXS_SCRATCH"/bs*.times 2>/dev/null | awk '{ print $2 }' | sort -n)
figure create_to_first_write_median_s "$(echo "$times" | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }')"
if [ $failed != 0 ]; then
    for i in $(seq 1 "$n"); do grep -q 'GUEST-RESULT PASS' "$PXS_OUT/console/guest-bs$i.log" 2>/dev/null || show_console "bs$i" >/dev/null; done
    die "$failed of $n guests did not finish"
fi
if is_pyxenstored; then
    refused=$(( $(stat_value transactions/refused) - refused_before ))
    committed=$(( $(stat_value transactions/committed) - committed_before ))
    figure eagain "$refused"
    figure commits "$committed"
    [ "$refused" = 0 ] || die "$refused EAGAIN answered during the bootstorm ($committed commits)"
fi
check_daemon || die "daemon not answering"
log "BOOTSTORM PASS: $n guests"

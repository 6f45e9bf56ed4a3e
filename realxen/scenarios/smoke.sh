#!/bin/bash
# smoke: dom0 tools and one PV guest over a real ring. The guest reads its domid, writes
# data/hello, waits with a watch for dom0's data/ack, reports data/result, keeps a watch and
# powers off. Afterwards its /local/domain/<id> subtree, its watches and its quota use are
# gone and @releaseDomain fired.
source "$PXS_HOME/dom0/lib.sh"
timeout 30 xl info > "$PXS_SCENARIO_DIR/xl-info.txt" 2>&1 || die "xl info failed"
timeout 30 xl list > "$PXS_SCENARIO_DIR/xl-list.txt" 2>&1 || die "xl list failed"
grep -q '^Domain-0' "$PXS_SCENARIO_DIR/xl-list.txt" || die "xl list has no Domain-0"
log "$(grep -E '^(xen_version|nr_cpus|free_memory)' "$PXS_SCENARIO_DIR/xl-info.txt" | tr -s ' ' | tr '\n' ';')"

xenstore-watch @releaseDomain > "$PXS_SCENARIO_DIR/release.log" 2>&1 &
watcher=$!
until_true 10 test -s "$PXS_SCENARIO_DIR/release.log" || die "no first @releaseDomain event"
watches_before=$(stat_value watches)

t0=$(uptime_s)
GUEST_STEPS=hello,ack,bye,keepwatch create smoke || die "xl create failed"
d=$(domid smoke)
xs_wait "/local/domain/$d/data/hello" 60 >/dev/null || { show_console smoke; die "no data/hello"; }
figure create_to_first_write_s "$(elapsed "$t0")"
timeout 10 xenstore-control quota "$d" > "$PXS_SCENARIO_DIR/quota-alive.txt" 2>&1 \
    || die "xenstore-control quota $d failed while the guest runs"
roundtrip smoke 60 || { show_console smoke; die "round trip failed"; }
wait_gone smoke 60 || die "guest did not go"
figure create_to_gone_s "$(elapsed "$t0")"
show_console smoke > /dev/null
grep -q 'GUEST-RESULT PASS' "$PXS_OUT/console/guest-smoke.log" || die "no GUEST-RESULT PASS on the console"

# the domain's traces in the daemon
until_true 20 sh -c '! xenstore-exists /local/domain/'"$d" || die "/local/domain/$d is still there"
until_true 20 sh -c "[ \$(grep -c . '$PXS_SCENARIO_DIR/release.log') -ge 2 ]" \
    || die "@releaseDomain did not fire for the guest's death"
if timeout 10 xenstore-control quota "$d" > "$PXS_SCENARIO_DIR/quota-dead.txt" 2>&1; then
    die "the dead domain still has quota use: $(cat "$PXS_SCENARIO_DIR/quota-dead.txt")"
fi
if is_pyxenstored; then
    after=$(stat_value watches)
    [ "$after" = "$watches_before" ] || die "watches before the guest $watches_before, after its death $after"
    log "watches back to $after"
fi
kill $watcher 2>/dev/null
check_daemon || die "daemon not answering"
log "SMOKE PASS"

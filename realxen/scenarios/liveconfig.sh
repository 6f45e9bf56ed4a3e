#!/bin/bash
# liveconfig: lower a running guest's node quota from dom0, live. The guest's next new node
# is refused (ENOSPC) and pyxenstored logs the refusal; raising the quota lets it write.
# pyxenstored: through /tool/xenstored/domain/<id>/quota/nodes. C xenstored (control run):
# through `xenstore-control quota set nodes N` (C has no per-domain setting; dom0 is exempt).
source "$PXS_HOME/dom0/lib.sh"
GUEST_STEPS=hello,probes,bye GUEST_ARGS=pxs_probes=3 create quota || die "xl create failed"
d=$(domid quota)
home=/local/domain/$d
xs_wait "$home/data/hello" 60 >/dev/null || { show_console quota; die "no data/hello"; }
for i in 1 2 3; do
    xenstore-write "$home/data/go$i" wait "$home/data/r$i" pending || die "cannot prepare probe $i"
done
# probe I: tell the guest to create data/pI; print its report
probe() {
    xenstore-write "$home/data/go$1" go
    until_true 30 sh -c "[ \"\$(xenstore-read $home/data/r$1)\" != pending ]" || { echo "no report"; return 1; }
    xenstore-read "$home/data/r$1"
}
nodes_used() { timeout 10 xenstore-control quota "$d" | awk -F'[:/]' '/^nodes/ { gsub(/ /, "", $2); print $2 }'; }
set_nodes_quota() {
    if is_pyxenstored; then xenstore-write "/tool/xenstored/domain/$d/quota/nodes" "$1"
    else xenstore-control quota set nodes "$1"; fi
}
r=$(probe 1); log "probe 1 (default quota): $r"
[ "$r" = ok ] || die "probe 1 refused under the default quota: $r"
used=$(nodes_used)
[ -n "$used" ] || die "cannot read the guest's node use: $(xenstore-control quota "$d" 2>&1)"
is_pyxenstored || default_nodes=$(xenstore-control quota | awk -F: '/nodes/ { gsub(/ /, "", $2); print $2 }')
set_nodes_quota "$used" || die "cannot lower the node quota to $used"
log "node quota lowered to the $used nodes the guest has"
r=$(probe 2); log "probe 2 (quota = use): $r"
case $r in refused*) ;; *) die "probe 2 was not refused: $r" ;; esac
if is_pyxenstored; then
    until_true 10 grep -q "domain $d: request refused by the nodes quota" /var/log/xen/pyxenstored.log \
        || die "the refusal is not in the daemon's log: $(tail -5 /var/log/xen/pyxenstored.log)"
    log "logged: $(grep "domain $d: request refused" /var/log/xen/pyxenstored.log | tail -1)"
    xenstore-rm "/tool/xenstored/domain/$d/quota/nodes" || die "cannot restore the default"
else
    set_nodes_quota "${default_nodes:-1000}" || die "cannot restore the quota"
fi
r=$(probe 3); log "probe 3 (quota restored): $r"
[ "$r" = ok ] || die "probe 3 refused after the quota was raised again: $r"
xs_wait "$home/data/result" 30 >/dev/null || die "no data/result"
xenstore-write "$home/data/bye" bye
wait_gone quota 60 || die "guest did not go"
check_daemon || die "daemon not answering"
log "LIVECONFIG PASS"

#!/bin/bash
# devices: a guest with a disk (blkback over a loop device on a dom0 file) and a network
# interface (netback on a bridge). Frontends and backends reach state 4 (Connected) through
# the daemon, and the guest sees its disk and its interface.
source "$PXS_HOME/dom0/lib.sh"
for m in loop xen-blkback xen-netback bridge; do modprobe "$m" || die "modprobe $m"; done
ip link add name xenbr0 type bridge 2>/dev/null
ip link set xenbr0 up || die "no bridge xenbr0"
truncate -s 32M "$PXS_SCRATCH/disk.img"
t0=$(uptime_s)
GUEST_STEPS=hello,disk,net,ack,bye create devices \
    "disk = [ 'format=raw,vdev=xvda,access=rw,target=$PXS_SCRATCH/disk.img' ]" \
    "vif = [ 'bridge=xenbr0' ]" || { cp /var/log/xen/xen-hotplug.log "$PXS_SCENARIO_DIR/" 2>/dev/null; die "xl create failed"; }
d=$(domid devices)
home=/local/domain/$d
xs_wait "$home/data/hello" 60 >/dev/null || { show_console devices; die "no data/hello"; }
disk=$(xs_wait "$home/data/disk" 90) || { show_console devices; die "the guest has no disk"; }
net=$(xs_wait "$home/data/net" 90) || { show_console devices; die "the guest has no network interface"; }
figure create_to_devices_s "$(elapsed "$t0")"
log "guest sees disk ($disk sectors) and interface $net"
for be in "/local/domain/0/backend/vbd/$d/51712" "/local/domain/0/backend/vif/$d/0"; do
    st=$(xenstore-read "$be/state") || die "no backend $be"
    fe=$(xenstore-read "$be/frontend") || die "no frontend path in $be"
    fst=$(xenstore-read "$fe/state")
    log "$be state $st, frontend $fe state $fst"
    [ "$st" = 4 ] && [ "$fst" = 4 ] || die "$be: backend state $st, frontend state $fst (want 4 and 4)"
done
roundtrip devices 60 || { show_console devices; die "round trip failed"; }
wait_gone devices 60 || die "guest did not go"
until_true 30 sh -c "! xenstore-exists /local/domain/0/backend/vbd/$d" || die "vbd backend left behind"
check_daemon || die "daemon not answering"
log "DEVICES PASS"

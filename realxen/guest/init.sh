#!/bin/busybox sh
# A PV guest's /init (guest.cpio.gz). Runs the steps named on the kernel command line
# (xl's `extra`; the kernel hands unknown name=value words to init as environment):
#   pxs_steps=hello,ack,bye   comma-separated, in order:
#     hello    write data/hello = "hello-from-DOMID" (the guest's first write)
#     ack      wait for data/ack with a watch (the answer from dom0)
#     disk     load blkfront; wait for /sys/block/xvda and device/vbd/*/state 4; write data/disk
#     net      load netfront; wait for an eth interface and device/vif/*/state 4; write data/net
#     probes   answer dom0's write probes: for i in 1..$pxs_probes, wait until data/go$i
#              reads "go", try to create data/p$i, write the outcome into data/r$i (both
#              made by dom0 beforehand, so reporting needs no new node); see liveconfig.sh
#     keepwatch  leave a watch on data set (a background xenstore-watch) and keep it when
#              the guest dies: the daemon must drop it with the domain
#     tooldiff pyxenstore against xenstore-utils over this guest's /dev/xen/xenbus (only the
#              tool image has Python: scenarios/tool.sh): /tooldiff/tooldiff.py, cases under
#              data/diffN, one "TOOLDIFF ..." console line per case; pxs_tool_cases=all
#              runs every case of tests/tool/cases.py, else one per verb
#     bye      write data/result (PASS or FAIL so far), wait for data/bye
#     halt     wait for data/halt (dom0 says when to power off)
#   pxs_wait=60    seconds each wait may take
# Then power off. Console: "GUEST step NAME ok|FAIL ...", last "GUEST-RESULT PASS|FAIL".
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp
WAIT=${pxs_wait:-60}
RESULT=PASS
D=$(xenstore-read domid 2>&1)
echo "GUEST init domid=$D uptime=$(cut -d' ' -f1 /proc/uptime) steps=${pxs_steps}"
ok() { echo "GUEST step $1 ok $2"; }
bad() { echo "GUEST step $1 FAIL $2"; RESULT=FAIL; }
# poll N CMD...: up to N seconds, every 0.2 s
poll() { n=$(($1 * 5)); shift; while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.2; n=$((n - 1)); done; return 1; }
state4() { for v in $(xenstore-list "device/$1" 2>/dev/null); do [ "$(xenstore-read "device/$1/$v/state" 2>/dev/null)" = 4 ] && return 0; done; return 1; }
loadmods() { for m in $(cat /mods/order 2>/dev/null); do insmod "/mods/$m" 2>/dev/null; done; }
is_go() { [ "$(xenstore-read "data/go$1" 2>/dev/null)" = go ]; }
events_at_least() { [ "$(wc -l < /tmp/ack.events)" -ge "$1" ]; }
ethernet() { ls /sys/class/net 2>/dev/null | grep -q '^eth'; }

for step in $(echo "${pxs_steps:-hello,ack,bye}" | tr ',' ' '); do
    case $step in
    hello) xenstore-write data/hello "hello-from-$D" && ok hello || bad hello "write refused" ;;
    ack)
        # A watch fires once when set, then on the change. dom0 may write data/ack at any
        # moment, also while the watch is being set: then only the first event comes.
        # So the watch runs in the background, and once its first event says it is set,
        # data/ack either is already there (written meanwhile) or must bring a second.
        if xenstore-exists data/ack 2>/dev/null; then ok ack "already there"
        else
            xenstore-watch -n 2 data/ack > /tmp/ack.events 2>/dev/null &
            w=$!
            if ! poll "$WAIT" events_at_least 1; then
                bad ack "the watch on data/ack never fired in ${WAIT}s"
            elif ! events_at_least 2 && xenstore-exists data/ack 2>/dev/null; then
                ok ack "written while the watch was set: $(xenstore-read data/ack)"
            elif poll "$WAIT" events_at_least 2; then
                A=$(xenstore-read data/ack 2>/dev/null) && ok ack "$A" || bad ack "an event but no data/ack"
            else
                bad ack "no event for data/ack in ${WAIT}s"
            fi
            kill $w 2>/dev/null
        fi ;;
    disk)
        loadmods
        if poll "$WAIT" test -e /sys/block/xvda && poll "$WAIT" state4 vbd; then
            xenstore-write data/disk "$(cat /sys/block/xvda/size)"
            ok disk "xvda sectors=$(cat /sys/block/xvda/size)"
        else bad disk "xvda $(ls /sys/block | tr '\n' ' ') states $(xenstore-ls device 2>&1 | grep state | tr '\n' ' ')"; fi ;;
    net)
        loadmods
        if poll "$WAIT" ethernet && poll "$WAIT" state4 vif; then
            xenstore-write data/net "$(ls /sys/class/net | grep '^eth' | head -1)"
            ok net "$(ls /sys/class/net | tr '\n' ' ')"
        else bad net "interfaces $(ls /sys/class/net | tr '\n' ' ')"; fi ;;
    probes)
        i=1
        while [ $i -le "${pxs_probes:-3}" ]; do
            if poll "$WAIT" is_go "$i"; then
                if out=$(xenstore-write "data/p$i" "probe$i" 2>&1); then r=ok; else r="refused: $out"; fi
                xenstore-write "data/r$i" "$r" || echo "GUEST cannot report probe $i"
                echo "GUEST probe $i: $r"
            else bad probes "no data/go$i"; break; fi
            i=$((i + 1))
        done ;;
    halt) poll "$WAIT" xenstore-exists data/halt && ok halt || bad halt "no data/halt in ${WAIT}s" ;;
    keepwatch)
        xenstore-watch data >/dev/null 2>&1 &
        sleep 1
        ok keepwatch ;;
    tooldiff)
        if [ -x /bin/pyxenstore ]; then
            quick=--quick; [ "${pxs_tool_cases:-}" = all ] && quick=
            # no XENSTORED_PATH: both tools find the device as libxenstore does
            if PATH=/bin:/sbin python3 /tooldiff/tooldiff.py /tooldiff/cases.py $quick \
                --top "/local/domain/$D/data/diff" --pyxenstore /bin/pyxenstore; then ok tooldiff
            else bad tooldiff "pyxenstore and xenstore-utils differ (TOOLDIFF lines above)"; fi
        else bad tooldiff "no /bin/pyxenstore: not the tool guest's image"; fi ;;
    bye)
        xenstore-write data/result "$RESULT"
        poll "$WAIT" xenstore-exists data/bye && ok bye || bad bye "no data/bye in ${WAIT}s" ;;
    *) bad "$step" "unknown step" ;;
    esac
done
echo "GUEST-RESULT $RESULT uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f

#!/bin/bash
# tool: pyxenstore against Debian's xenstore-utils over the kernel's xenbus device, inside
# a PV guest and in dom0 (same stdout bytes, exit status, empty-or-not stderr and resulting
# subtree; realxen/guest/tooldiff.py runs the cases of tests/tool/cases.py and prints one
# "TOOLDIFF ok|FAIL CASE" line per case).
#   guest: the tool image (the guest initramfs plus the host's Python, its pruned standard
#         library and pyxenstored; xenqemu.py builds it) runs one case per verb
#         (PXS_TOOL_CASES=all: every case) over the guest's own /dev/xen/xenbus, found as
#         libxenstore finds it (no XENSTORED_PATH), with its cases under its home.
#   dom0, while the guest works: the control case through /dev/xen/xenbus (privileged:
#         it needs dom0). Each pyxenstore start in dom0 reads Python over 9p (~30 s under
#         TCG on a loaded host, and it slows the guest down), so dom0 keeps to that one;
#         the guest covers every verb.
source "$PXS_HOME/dom0/lib.sh"
[ -c /dev/xen/xenbus ] || die "dom0 has no /dev/xen/xenbus"
cd "$PXS_CHECKOUT" || die "no checkout at $PXS_CHECKOUT"
[ -f "${PXS_GUEST_TOOL_INITRD:-}" ] || die "no tool guest image '${PXS_GUEST_TOOL_INITRD:-}'"
t0=$(uptime_s)
GUEST_MEM=384 PXS_GUEST_INITRD=$PXS_GUEST_TOOL_INITRD GUEST_STEPS=hello,tooldiff,bye \
    GUEST_ARGS="pxs_wait=120 ${PXS_TOOL_CASES:+pxs_tool_cases=$PXS_TOOL_CASES}" \
    create tool || die "xl create failed"
d=$(domid tool)

# dom0, meanwhile: the privileged case through the device (under /tooldiffN, whose parent
# exists; the harness's own client builds and reads the tree through the device too)
XENSTORED_PATH=/dev/xen/xenbus timeout 180 .venv/bin/python realxen/guest/tooldiff.py \
    tests/tool/cases.py --quick --verbs control --top /tooldiff \
    --pyxenstore .venv/bin/pyxenstore >> "$PXS_LOG" 2>&1
rc=$?
[ $rc = 0 ] || die "dom0 differential over /dev/xen/xenbus: status $rc (TOOLDIFF lines above; 124: timed out)"
figure tool_dom0_s "$(elapsed "$t0")"

# the guest's verdict
xs_wait "/local/domain/$d/data/hello" 180 >/dev/null || { show_console tool; die "no data/hello from the tool guest"; }
result=$(xs_wait "/local/domain/$d/data/result" 420) || { show_console tool; die "no data/result from the tool guest"; }
xenstore-write "/local/domain/$d/data/bye" bye
figure tool_guest_s "$(elapsed "$t0")"
wait_gone tool 60 || log "the tool guest did not power off in 60 s"
console_of tool | grep -E '^TOOLDIFF|^GUEST' | sed 's/^/  guest: /' | tee -a "$PXS_LOG" > /dev/null
figure tool_guest_cases_ok "$(console_of tool | grep -c '^TOOLDIFF ok')"
[ "$result" = PASS ] || die "the guest reports $result"
console_of tool | grep -q '^TOOLDIFF-RESULT PASS' || die "no TOOLDIFF-RESULT PASS on the guest's console"
exists_domain tool && xl destroy tool
check_daemon || die "daemon not answering"
log "TOOL PASS"

#!/bin/bash
# tool: pyxenstore against Debian's xenstore-utils through dom0's /dev/xen/xenbus (the
# kernel's channel, which a guest's tools use too): one case per shared verb and flag
# (tests/tool/test_differential.py, PXS_TOOL_QUICK=1), same stdout, exit status and tree.
# Both tools open the device as libxenstore does (XENSTORED_PATH names it, stat says it is
# not a socket). Our guests are busybox initramfs images without Python, so this runs in
# dom0, whose kernel channel is the same driver.
source "$PXS_HOME/dom0/lib.sh"
[ -c /dev/xen/xenbus ] || die "dom0 has no /dev/xen/xenbus"
cd "$PXS_CHECKOUT" || die "no checkout at $PXS_CHECKOUT"
t0=$(uptime_s)
# the device itself first: one write, one read through it, by each tool
XENSTORED_PATH=/dev/xen/xenbus timeout 60 .venv/bin/pyxenstore write /tool-check/a "via xenbus" 2>> "$PXS_LOG" \
    || die "pyxenstore write over /dev/xen/xenbus failed"
got=$(XENSTORED_PATH=/dev/xen/xenbus timeout 30 xenstore-read /tool-check/a) \
    || die "xenstore-read over /dev/xen/xenbus failed"
[ "$got" = "via xenbus" ] || die "xenstore-read saw '$got'"
PXS_TOOL_TARGET=/dev/xen/xenbus PXS_TOOL_QUICK=1 timeout 240 .venv/bin/python -m pytest \
    -p no:cacheprovider -o addopts= -q -rs tests/tool/test_differential.py -k "not terminal" \
    >> "$PXS_LOG" 2>&1 || die "differential test over /dev/xen/xenbus failed (log above)"
figure tool_differential_s "$(elapsed "$t0")"
grep -q ' passed' "$PXS_LOG" || die "pytest reported nothing passed"
if grep -q ' skipped' "$PXS_LOG"; then die "cases were skipped (xenstore-utils missing in dom0?)"; fi
xenstore-rm /tool-check
check_daemon || die "daemon not answering"
log "TOOL PASS"

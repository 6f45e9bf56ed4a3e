"""Real Xen in QEMU: time from `xl create` to a guest's first xenstore round trip, alone and
in a bootstorm, for pyxenstored beside C xenstored (issue 8, "figures from real Xen").

Each boot runs the real-Xen suite's `smoke` and `bootstorm` scenarios (realxen/, the same
harness as `make test-xen`); boots alternate between the daemons so that drift in the
machine's speed hits both alike. Reported per daemon, as medians over the boots:

* `alone`: seconds from the start of `xl create` until dom0 sees the guest's first write
  (`data/hello`, written right after the guest read its domid: its first round trips);
* `storm`: the median of the same over the bootstorm's guests, created in parallel;
* `storm wall`: the whole bootstorm (create, round trips, every guest gone);
* `daemon CPU`: the daemon's CPU seconds during the bootstorm;
* `EAGAIN`: answered during the bootstorm (pyxenstored's statistics; C has none to read).

Everything runs under TCG emulation, which magnifies CPU costs: the ratios are what count.

    python3 benchmarks/xen_boots.py --boots 3 [--guests 8]

Needs what `make test-xen` needs (root, x86_64, Debian's Xen packages).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realxen import xenqemu

FIGURES = (
    ("alone", "smoke", "create_to_first_write_s"),
    ("storm", "bootstorm", "create_to_first_write_median_s"),
    ("storm wall", "bootstorm", "wall_s"),
    ("daemon CPU", "bootstorm", "daemon_cpu_s"),
    ("EAGAIN", "bootstorm", "eagain"),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--boots", type=int, default=3, help="boots per daemon")
    p.add_argument("--guests", type=int, default=8, help="guests in the bootstorm")
    p.add_argument("--daemons", default="pyxenstored,cxenstored")
    args = p.parse_args()
    reason = xenqemu.why_not_here()
    if reason:
        print(f"cannot run here: {reason}", file=sys.stderr)
        return 77
    cache = Path(os.environ.get("PXS_XEN_CACHE", "/var/tmp/pyxenstored-realxen"))
    cache.mkdir(parents=True, exist_ok=True)
    xenqemu.install_packages(cache / "apt.log")
    images = xenqemu.build_images(cache)
    daemons = args.daemons.split(",")
    values: dict[str, dict[str, list[float]]] = {d: {f[0]: [] for f in FIGURES} for d in daemons}
    failures: list[str] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for boot_no in range(args.boots):
        for daemon in daemons:
            out = cache / "out" / f"bench-{stamp}-{daemon}-{boot_no}"
            settings = xenqemu.BootSettings(
                daemon=daemon, scenarios=("smoke", "bootstorm"), guests=args.guests
            )
            result = xenqemu.boot(images, out, settings)
            for scenario in ("smoke", "bootstorm"):
                if result.scenario_status(scenario) != 0:
                    failures.append(f"{daemon} boot {boot_no} {scenario}: see {out}")
            for label, scenario, key in FIGURES:
                text = result.figures(scenario).get(key)
                if text is not None:
                    values[daemon][label].append(float(text))
            print(
                f"boot {boot_no} {daemon}: {result.figures('smoke')} {result.figures('bootstorm')}",
                file=sys.stderr,
            )
    print(
        f"| figure ({args.boots} boots, {args.guests}-guest storm, medians) | "
        + " | ".join(daemons)
        + " | ratio |"
    )
    print("|---|" + "---|" * len(daemons) + "---|")
    for label, _, _ in FIGURES:
        meds = [statistics.median(values[d][label]) if values[d][label] else None for d in daemons]
        cells = [f"{m:.1f}" if m is not None else "n/a" for m in meds]
        ratio = (
            f"{meds[0] / meds[1]:.2f}x"
            if len(meds) == 2 and meds[0] is not None and meds[1]
            else ""
        )
        print(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""The real-Xen suite: Debian's Xen 4.17 and Linux dom0 in QEMU, the daemon installed as the
host's xenstored through Debian's launch-xenstore, PV guests on real rings (docs/real-xen.md).

Each scenario is one test; its dom0 log, console logs and figures stay in the boot's output
folder (named in the failure message).
"""

from __future__ import annotations

import pytest

from . import xenqemu
from .conftest import selected_scenarios


def _explain(boot: xenqemu.Boot, name: str) -> str:
    return (
        f"scenario {name} with {boot.out.name}: status {boot.scenario_status(name)} "
        f"(boot status {boot.status}); output {boot.out}\n--- scenario log ---\n"
        + boot.scenario_log(name)[-6000:]
    )


def test_boot_reached_the_scenarios(booted: xenqemu.Boot) -> None:
    """Dom0 booted and ran the suite (a boot that never got there was retried once)."""
    assert xenqemu.reached_suite(booted), (
        f"dom0 never ran the suite in {booted.attempts} boot(s); see {booted.out}/serial.log"
    )


def test_daemon_started_from_launch_xenstore(booted: xenqemu.Boot, daemon: str) -> None:
    """Started by Debian's launch-xenstore with only XENSTORED changed in xencommons;
    pyxenstored under a NOTIFY_SOCKET (as systemd's xenstored.service) announced READY=1."""
    figures = (
        (booted.out / ".run" / "figures").read_text()
        if (booted.out / ".run" / "figures").exists()
        else ""
    )
    assert "daemon_start_s=" in figures, (
        f"the daemon did not come up through launch-xenstore; see {booted.out}/serial.log "
        f"and {booted.out}/launch-xenstore.log"
    )
    if daemon == "pyxenstored":
        notes = (booted.out / "notify.log").read_text(errors="replace")
        assert "READY=1" in notes, f"no READY=1 on the notify socket: {notes!r}"


@pytest.mark.parametrize("name", xenqemu.SCENARIOS)
def test_scenario(booted: xenqemu.Boot, daemon: str, name: str) -> None:
    if name in xenqemu.PYXENSTORED_ONLY and daemon != "pyxenstored":
        pytest.skip(f"{name}: {daemon} has nothing to compare (pyxenstored only)")
    if name not in selected_scenarios(daemon):
        pytest.skip(f"{name} not in PXS_SCENARIOS")
    assert booted.scenario_status(name) == 0, _explain(booted, name)

"""Driver domains over simulated rings with default settings (issue 5): a backend
domain serving 300 guests with 3 devices each writes its ~15 nodes per device without a
single refusal, while an ordinary guest creating 2000 nodes is refused at its limit."""

from __future__ import annotations

import asyncio

import pytest

from pyxenstored import errors

from .simharness import SimDaemon, run

DRIVER = 7
GUEST = 8
FRONTENDS = range(100, 400)  # 300 guests
DEVICES = (("vif", 0), ("vbd", 51712), ("vbd", 51728))
KEYS = (
    "frontend", "frontend-id", "online", "state", "script", "mac", "bridge", "handle",
    "type", "hotplug-status", "feature-sg", "feature-gso-tcpv4", "feature-rx-copy",
    "feature-rx-notify", "mode",
)  # fmt: skip


def test_driver_domain_serves_900_devices_and_a_guest_is_refused_at_its_limit() -> None:
    async def body() -> None:
        async with SimDaemon() as d:
            d0 = d.d0()
            drv = await d.guest(DRIVER)
            guest = await d.guest(GUEST)
            # dom0 creates each backend directory and hands it to the driver domain,
            # as libxl does; the domain then fills it in.
            for fe in FRONTENDS:
                await asyncio.gather(
                    *(
                        d0.mkdir(f"/local/domain/{DRIVER}/backend/{kind}/{fe}/{dev}")
                        for kind, dev in DEVICES
                    )
                )
                await asyncio.gather(
                    *(
                        d0.set_perms(
                            f"/local/domain/{DRIVER}/backend/{kind}/{fe}/{dev}",
                            [f"n{DRIVER}", f"r{fe}"],
                        )
                        for kind, dev in DEVICES
                    )
                )
            for fe in FRONTENDS:
                await asyncio.gather(
                    *(
                        drv.write(f"backend/{kind}/{fe}/{dev}/{key}", b"1")
                        for kind, dev in DEVICES
                        for key in KEYS
                    )
                )
            assert d.server is not None
            engine = d.server.engine
            owned = engine.tree.owner_count[DRIVER]
            assert owned >= 300 * 3 * (len(KEYS) + 1)  # far beyond the 1000 default
            assert engine.refusals.counts == {}
            assert await d0.read("/tool/xenstored/quota/nodes") == b"1000"

            # An ordinary guest has no devices to serve: it stops at 1000 nodes.
            await guest.mkdir("data")
            refused = None
            for i in range(2000):
                try:
                    await guest.write(f"data/d{i // 100}/n{i % 100}", b"")
                except errors.NoSpace:
                    refused = i
                    break
            assert refused is not None, "an ordinary guest created 2000 nodes"
            assert engine.tree.owner_count[GUEST] == 1000
            assert engine.refusals.counts[(GUEST, "nodes")] == 1
            with pytest.raises(errors.NoSpace):
                await guest.write("data/one-more", b"")

    run(body, timeout=120)

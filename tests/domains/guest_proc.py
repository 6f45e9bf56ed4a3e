"""A simulated guest domain in its own process (used by the end-to-end tests).

``python guest_proc.py FAKEXEN_DIR DOMID KEYS``: creates the ring page and notify socket,
prints ``page``, waits for ``go`` on stdin (sent once dom0's INTRODUCE returned), then
writes and reads back KEYS nodes under ``data/``, watches ``control/cmd``, prints
``ready``, and when dom0 writes the command, copies it to ``data/done`` and exits 0.
"""

from __future__ import annotations

import asyncio
import sys

from pyxenstored.client.aio import Client
from pyxenstored.client.ring import RingChannel, SimGuest


async def main(directory: str, domid: int, keys: int) -> None:
    guest = SimGuest(directory, domid)
    print("page", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    assert line.strip() == "go", line
    async with Client(RingChannel(guest)) as xs:
        await asyncio.gather(*(xs.write(f"data/k{i}", f"{domid}:{i}") for i in range(keys)))
        for i in range(keys):
            assert await xs.read(f"data/k{i}") == f"{domid}:{i}".encode()
        assert len(await xs.directory("data")) == keys
        await xs.watch("control/cmd", "cmd")
        assert (await xs.next_event(10)).path == "control/cmd"
        print("ready", flush=True)
        while True:
            event = await xs.next_event(30)
            try:
                cmd = await xs.read("control/cmd")
            except Exception:
                continue
            if cmd:
                assert event.token == "cmd"
                await xs.write("data/done", cmd)
                return


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))

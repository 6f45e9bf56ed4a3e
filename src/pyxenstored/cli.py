"""Command line: ``pyxenstored [options]`` runs the daemon in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .client.values import default_socket_path
from .errors import XenstoreError
from .liveconfig.registry import Registry
from .runtime.loops import LOOPS
from .runtime.rings import XEN_MODES
from .runtime.server import Server, ServerConfig

__all__ = ["default_socket_path", "main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pyxenstored", description="Xen xenstore daemon")
    p.add_argument("--socket", help="Unix socket path (default: as libxenstore looks for it)")
    p.add_argument("--pid-file", help="write the daemon's pid here")
    p.add_argument("--loop", choices=sorted(LOOPS), default="auto", help="event loop")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    p.add_argument("--access-log", metavar="FILE", help="one line per request and reply")
    p.add_argument("--priv-domid", type=int, default=0, help="the privileged domain")
    p.add_argument(
        "--transaction-conflicts",
        choices=("coalesce", "generation"),
        default="coalesce",
        help="coalesce: EAGAIN only when an observation changed; generation: C's rule",
    )
    p.add_argument(
        "--socket-buffer-max",
        type=int,
        metavar="BYTES",
        help="unread output after which a socket client is disconnected (16 MiB)",
    )
    p.add_argument(
        "--list-settings",
        action="store_true",
        help="print every live setting with its default, unit and meaning, then exit",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="start value of a live setting (a node under /tool/xenstored/, e.g. quota/nodes)",
    )
    p.add_argument(
        "--xen",
        choices=XEN_MODES,
        default="auto",
        help="serve guest rings through Linux Xen devices (auto: if /dev/xen/evtchn exists)",
    )
    p.add_argument(
        "--sim-xen",
        metavar="DIR",
        help="serve guest rings through the simulated Xen in DIR (tests, benchmarks)",
    )
    p.add_argument(
        "--stub-domain",
        action="store_true",
        help="no Unix socket: dom0 connects over its own ring (port from --event)",
    )
    p.add_argument(
        "--event",
        type=int,
        metavar="PORT",
        help="dom0's event channel port in stub-domain mode (as init-xenstore-domain passes)",
    )
    p.add_argument(
        "--quota-rule",
        choices=("4.21", "4.22"),
        default="4.21",
        help="quota boundary rule of C xenstored <=4.21 (default) or 4.22",
    )
    return p.parse_args(argv)


def _start_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Registry start values from the options (validated like a tree write)."""
    registry = Registry()
    values: dict[str, Any] = {
        "log/level": registry.parse("log/level", str(args.log_level).lower()),
        "transaction/conflicts": args.transaction_conflicts,
        "quota/rule": args.quota_rule,
    }
    if args.access_log:
        values["log/access"] = True
        values["log/access-file"] = args.access_log
    if args.socket_buffer_max is not None:
        values["limits/socket-buffer-bytes"] = registry.parse(
            "limits/socket-buffer-bytes", str(args.socket_buffer_max)
        )
    for item in args.set or ():
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants NAME=VALUE, not {item!r}")
        try:
            values[name] = registry.parse(name, text)
        except XenstoreError as err:
            raise SystemExit(f"--set {item}: {err}") from None
    return values


def settings_table() -> str:
    """Every live setting: name, default, unit and description (``--list-settings``)."""
    registry = Registry()
    rows = [
        (name, registry.format(name, spec.default), spec.unit, spec.help)
        for name, spec in registry.specs.items()
    ]
    width = max(len(r[0]) for r in rows)
    lines = ["settings live under /tool/xenstored/<name>; change them by writing the node"]
    lines += [f"{n:<{width}}  {d:<10} {u:<12} {h}" for n, d, u, h in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_settings:
        print(settings_table())
        return 0
    if args.stub_domain and args.socket:
        raise SystemExit("--stub-domain serves no Unix socket: drop --socket")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    config = ServerConfig(
        socket_path=None if args.stub_domain else args.socket or default_socket_path(),
        xen=args.xen,
        sim_xen_dir=args.sim_xen,
        stub_domain=args.stub_domain,
        event_port=args.event,
        pid_file=args.pid_file,
        loop=args.loop,
        priv_domid=args.priv_domid,
        settings=_start_settings(args),
    )
    try:
        server = Server(config)
    except (ValueError, OSError) as err:
        raise SystemExit(f"pyxenstored: {err}") from None
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

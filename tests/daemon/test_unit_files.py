"""contrib/systemd: the unit files say what the daemon does (Type=notify, the socket it
is handed), and their command line is one the daemon accepts."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from pyxenstored.cli import build_config, parse_args

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def test_service_is_type_notify_with_a_command_line_the_daemon_takes() -> None:
    service = unit("xenstored.service")["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"  # the daemon does not fork: -N/--foreground
    assert int(service["WatchdogSec"]) > 0
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/usr/bin/pyxenstored" and argv[-1] == "$XENSTORED_ARGS"
    args = parse_args([*argv[1:-1], "--metrics-listen", "9101"])
    assert args.no_fork
    config, ignored = build_config(args)
    assert ignored == []
    assert config.socket_path == "/run/xenstored/socket"
    assert config.metrics_listen == ("localhost", 9101)


def test_socket_unit_hands_the_daemon_its_usual_socket() -> None:
    sock = unit("xenstored.socket")["Socket"]
    assert sock["ListenStream"] == "/run/xenstored/socket"
    assert sock["SocketMode"] == "0600"  # as the daemon makes it when it binds itself
    assert sock["Service"] == "xenstored.service"
    service = unit("xenstored.service")
    assert "xenstored.socket" in service["Unit"]["Wants"]
    assert service["Install"]["Also"] == "xenstored.socket"

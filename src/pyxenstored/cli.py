"""Command line: ``pyxenstored [options]`` runs the daemon.

It detaches like C xenstored unless ``-N``/``--foreground``, and it takes C xenstored's
options too (``liveconfig/coptions.py``), so it can be Debian's ``$XENSTORED`` as is.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .client.values import default_socket_path
from .core.quota import RULES
from .errors import XenstoreError
from .liveconfig.coptions import translate
from .liveconfig.registry import Registry
from .runtime.activation import take_listen_fds
from .runtime.daemon import Detached, Foreground, configure_logging, detach
from .runtime.loops import LOOPS
from .runtime.metrics import parse_listen
from .runtime.rings import XEN_MODES
from .runtime.server import AlreadyRunning, Server, ServerConfig, StartupError, describe_error

__all__ = [
    "UsageError",
    "build_config",
    "build_parser",
    "c_command_line",
    "default_socket_path",
    "main",
    "parse_args",
]

log = logging.getLogger("pyxenstored")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line too (and exit 2, as argparse's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


class _COption(argparse.Action):
    """Collects C xenstored's setting options in order, as ``(long name, value)``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        name = next(o[2:] for o in self.option_strings if o.startswith("--"))
        pairs = list(getattr(namespace, self.dest) or [])
        pairs.append((name, None if self.nargs == 0 else values))
        setattr(namespace, self.dest, pairs)


#: the title of the option group that holds C xenstored's options, and only them
_C_GROUP = "C xenstored's options"


def _c_options(p: argparse.ArgumentParser) -> None:
    """C xenstored's options (4.17 and later), with C's short letters."""
    g = p.add_argument_group(
        _C_GROUP, "accepted as C xenstored 4.17-4.21 reads them (the last wins)"
    )
    g.add_argument("-F", "--pid-file", metavar="FILE", help="write the daemon's pid here")
    g.add_argument(
        "-N",
        "--no-fork",
        "--foreground",
        dest="no_fork",
        action="store_true",
        help="stay in the foreground (default: detach once serving, as C xenstored)",
    )
    g.add_argument(
        "-P", "--output-pid", action="store_true", help="print the daemon's pid once it serves"
    )
    g.add_argument(
        "-D",
        "--no-domain-init",
        action="store_true",
        help="serve no Xen rings (the same as --xen none)",
    )
    g.add_argument(
        "-p", "--priv-domid", type=int, default=0, metavar="DOMID", help="the privileged domain"
    )
    g.add_argument(
        "-m",
        "--master-domid",
        type=int,
        metavar="DOMID",
        help="the domain dom0's own ring belongs to (accepted; it is served as domain 0)",
    )
    g.add_argument(
        "-e",
        "--event",
        type=int,
        metavar="PORT",
        help="dom0's event channel port in stub-domain mode (as init-xenstore-domain passes)",
    )
    settings: list[tuple[tuple[str, ...], str | None, str]] = [
        (("-E", "--entry-nb"), "NB", "quota/nodes"),
        (("-S", "--entry-size"), "SIZE", "quota/node-size"),
        (("-W", "--watch-nb"), "NB", "quota/watches"),
        (("-t", "--transaction"), "NB", "quota/transactions"),
        (("-A", "--perm-nb"), "NB", "quota/node-permissions"),
        (("-M", "--path-max"), "CHARS", "quota/path-max (at most 2048)"),
        (("-Q", "--quota"), "WHAT=NB", "quota/WHAT (nodes, memory, outstanding, ...)"),
        (("-q", "--quota-soft"), "WHAT=NB", "quota-soft/WHAT (memory)"),
        (("-w", "--timeout"), "WHAT=SECONDS", "watch-event: accepted, ignored"),
        (("-T", "--trace-file"), "FILE", "the access log (as --access-log FILE)"),
        (("--trace-control",), "+SWITCH|-SWITCH", "accepted, ignored"),
    ]
    for flags, metavar, text in settings:
        g.add_argument(*flags, dest="c_settings", metavar=metavar, action=_COption, help=text)
    g.add_argument(
        "-I",
        "--internal-db",
        dest="c_settings",
        nargs="?",
        metavar="on|off",
        action=_COption,
        help="accepted, ignored: the store always lives in memory",
    )
    g.add_argument(
        "-V", "--verbose", dest="c_settings", nargs=0, action=_COption, help="log level debug"
    )
    g.add_argument(
        "-K",
        "--keep-orphans",
        dest="c_settings",
        nargs=0,
        action=_COption,
        help="accepted, ignored: a dead domain's nodes are always removed",
    )
    g.add_argument(
        "-U",
        "--live-update",
        action="store_true",
        help="start from a live update's state ($XENSTORED_RUNDIR/state_dump); never forks",
    )
    g.add_argument("-R", "--no-recovery", action="store_true", help="not supported")
    g.add_argument("-H", action="help", help="the same as --help")


def c_command_line(argv: Sequence[str]) -> list[str]:
    """``argv`` (our own options) less every option C xenstored does not know.

    A live update passes the daemon's own command line on when none is given, as C
    does; C xenstored refuses to start on an option it does not know, so a live update
    to C keeps only C's (``--log-file`` and the like go, with their values). Options are
    taken as argparse reads them: ``--opt=value``, ``--opt value``, ``-Xvalue``,
    ``-X value`` and bundled flags ``-NP``; an abbreviated long option is dropped.
    """
    parser = build_parser()
    # argparse has no public view of a group's options; these attributes are typed and
    # have been stable since Python 3.2.
    c_actions = next(g for g in parser._action_groups if g.title == _C_GROUP)._group_actions
    arity: dict[str, tuple[bool, int | str | None]] = {}
    for action in parser._actions:
        for option in action.option_strings:
            arity[option] = (action in c_actions, action.nargs)
    out: list[str] = []
    i = 0

    def value_next(nargs: int | str | None) -> list[str]:
        """The next token, taken as the value of an option written without one."""
        nonlocal i
        if i < len(argv) and (nargs != "?" or not argv[i].startswith("-")):
            i += 1
            return [argv[i - 1]]
        return []

    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            break
        if token.startswith("--"):
            name, eq, _ = token.partition("=")
            keep, nargs = arity.get(name, (False, 0))
            value = value_next(nargs) if nargs != 0 and not eq else []
            if keep:
                out += [token, *value]
        elif token.startswith("-") and len(token) > 1:
            for j, letter in enumerate(token[1:], 1):
                keep, nargs = arity.get("-" + letter, (False, 0))
                if nargs == 0:
                    if keep:
                        out.append("-" + letter)
                    continue
                rest = token[j + 1 :]
                value = [] if rest else value_next(nargs)
                if keep:
                    out += ["-" + letter + rest, *value]
                break
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The daemon's command line, parsed (exit 2 with one line on a usage error)."""
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    """The daemon's argument parser (also the source of the pyxenstored(8) man page)."""
    p = _Parser(prog="pyxenstored", description="Xen xenstore daemon")
    p.add_argument("--socket", help="Unix socket path (default: as libxenstore looks for it)")
    p.add_argument("--loop", choices=sorted(LOOPS), default="auto", help="event loop")
    p.add_argument("--log-level", help="debug, info, warning, error (default: info)")
    p.add_argument(
        "--log-file",
        metavar="FILE",
        help="the daemon's log (SIGHUP reopens it); default: stderr in the foreground, "
        "detached: syslog, else /var/log/xen/pyxenstored.log",
    )
    p.add_argument("--access-log", metavar="FILE", help="one line per request and reply")
    p.add_argument(
        "--transaction-conflicts",
        choices=("coalesce", "generation"),
        help="coalesce (default): EAGAIN only when an observation changed; generation: C's",
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
        "--state-dir",
        metavar="DIR",
        help="the crash journal's directory (default: the socket's; none in stub-domain "
        "mode unless given)",
    )
    p.add_argument(
        "--no-journal",
        action="store_true",
        help="keep no crash journal (a crash then loses the whole state)",
    )
    p.add_argument(
        "--no-recover",
        action="store_true",
        help="ignore (and remove) a crash journal: start empty",
    )
    p.add_argument(
        "--stub-domain",
        action="store_true",
        help="no Unix socket: dom0 connects over its own ring (port from --event)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="[HOST:]PORT",
        help="serve the statistics as Prometheus metrics over HTTP (host: localhost); "
        "off by default",
    )
    p.add_argument(
        "--log-format",
        choices=("auto", "plain", "journal"),
        default="auto",
        help="journal: <N> priority prefixes and no timestamps, for systemd's journal "
        "(auto: when stderr is the journal)",
    )
    p.add_argument(
        "--access-log-format",
        choices=("pyxenstored", "c"),
        help="access log lines: ours (default) or C xenstored's trace format",
    )
    p.add_argument(
        "--quota-rule",
        choices=RULES,
        help="quota boundary rule of C xenstored <=4.21 (default) or 4.22",
    )
    _c_options(p)
    return p


class UsageError(Exception):
    """The command line asks for something we will not do (one line, exit 1)."""


def _absolute(path: str | None) -> str | None:
    """Paths survive the daemon's ``chdir("/")``."""
    return os.path.abspath(path) if path else path


def _start_settings(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Registry start values from the options (validated like a tree write), and one
    line for each option accepted but ignored.

    C's options apply first, then ours, then ``--set``: the more specific wins.
    """
    registry = Registry()
    try:
        c_opts = translate(args.c_settings or ())
    except XenstoreError as err:
        raise UsageError(str(err)) from None
    values = dict(c_opts.settings)
    if args.log_level is not None:
        level = str(args.log_level).lower()
        values["log/level"] = _parse(registry, "log/level", level, f"--log-level {args.log_level}")
    if args.transaction_conflicts is not None:
        values["transaction/conflicts"] = args.transaction_conflicts
    if args.quota_rule is not None:
        values["quota/rule"] = args.quota_rule
    if args.access_log:
        values["log/access"] = True
        values["log/access-file"] = args.access_log
    if args.access_log_format is not None:
        values["log/access-format"] = args.access_log_format
    if args.socket_buffer_max is not None:
        text = str(args.socket_buffer_max)
        values["limits/socket-buffer-bytes"] = _parse(
            registry, "limits/socket-buffer-bytes", text, "--socket-buffer-max"
        )
    for item in args.set or ():
        name, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--set wants NAME=VALUE, not {item!r}")
        values[name] = _parse(registry, name, text, f"--set {item}")
    if values.get("log/access-file"):
        values["log/access-file"] = _absolute(str(values["log/access-file"]))
    return values, c_opts.ignored


def _parse(registry: Registry, name: str, text: str, what: str) -> Any:
    try:
        return registry.parse(name, text)
    except XenstoreError as err:
        raise UsageError(f"{what}: {err}") from None


def build_config(args: argparse.Namespace) -> tuple[ServerConfig, list[str]]:
    """The server's configuration, and the lines to log about ignored options."""
    if args.no_recovery:
        raise UsageError("-R/--no-recovery is not supported")
    if args.stub_domain and args.socket:
        raise UsageError("--stub-domain serves no Unix socket: drop --socket")
    xen = args.xen
    if args.no_domain_init:
        if args.sim_xen or xen == "linux":
            raise UsageError("-D/--no-domain-init serves no rings: drop --xen linux/--sim-xen")
        xen = "none"
    settings, ignored = _start_settings(args)
    if args.master_domid:
        ignored.append(
            f"--master-domid {args.master_domid}: ignored: dom0's own ring is served as domain 0's"
        )
    if args.event is not None and not args.stub_domain:
        ignored.append(
            f"--event {args.event}: ignored: dom0's port is read from /proc/xen/xsd_port "
            "(as C xenstored on Linux)"
        )
    metrics_listen = None
    if args.metrics_listen:
        try:
            metrics_listen = parse_listen(args.metrics_listen)
        except ValueError as err:
            raise UsageError(str(err)) from None
    config = ServerConfig(
        metrics_listen=metrics_listen,
        socket_path=None if args.stub_domain else _absolute(args.socket or default_socket_path()),
        xen=xen,
        sim_xen_dir=_absolute(args.sim_xen),
        stub_domain=args.stub_domain,
        event_port=args.event,
        pid_file=_absolute(args.pid_file),
        loop=args.loop,
        priv_domid=args.priv_domid,
        settings=settings,
        live_update=args.live_update,
        state_dir=_absolute(args.state_dir),
        journal=not args.no_journal,
        recover=not args.no_recover,
    )
    return config, ignored


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


def main(argv: Sequence[str] | None = None, *, fork_by_default: bool = True) -> int:
    """Run the daemon. ``fork_by_default``: detach unless ``-N``, as C xenstored does
    (the installed ``pyxenstored`` command, what a host's ``XENSTORED`` names);
    ``python -m pyxenstored`` passes False and stays in the foreground, as harnesses
    that start and stop it by its pid expect."""
    args = parse_args(argv)
    if args.list_settings:
        print(settings_table())
        return 0
    try:
        config, ignored = build_config(args)
    except UsageError as err:
        print(f"pyxenstored: {err}", file=sys.stderr)
        return 1
    # Before any fork: $LISTEN_PID names this process, and the variables must go.
    config.listen_fds = take_listen_fds()
    own = list(sys.argv[1:] if argv is None else argv)
    config.command_line = own
    config.c_command_line = c_command_line(own)
    log_file = _absolute(args.log_file)
    fork = fork_by_default and not args.no_fork
    # Fork before anything is opened: no Xen device, no event loop, no log file yet.
    # A live update is exec'd by a daemon that detached already: it never forks again.
    start: Foreground | Detached = (
        detach(args.output_pid) if fork and not args.live_update else Foreground(args.output_pid)
    )
    try:
        where = configure_logging(log_file, detached=fork, style=args.log_format)
    except OSError as err:
        return start.failed(f"cannot open the log file: {describe_error(err)}")
    log.debug("logging to %s", where)
    for line in ignored:
        log.warning("%s", line)
    return _serve(config, start)


def freeze_long_lived() -> None:
    """Once the daemon serves, what exists (modules, classes, functions, a restored
    state's containers) lives as long as the process: take it out of the cyclic
    collector's view (gc.freeze), so that a full collection does not walk it again. A
    full collection is a pause in every reply: during 200-VM bootstorms, 14 ms before,
    6 ms after (benchmarks/RESULTS.md "Issue 10, round 3"). Only the daemon's process
    does this (not a Server built inside another program, such as the tests)."""
    gc.collect()
    gc.freeze()


def _serve(config: ServerConfig, start: Foreground | Detached) -> int:
    """Build and run the server; a start-up failure is one line, never a traceback."""
    try:
        server = Server(config)
        server.on_ready.append(start.ready)
        server.on_ready.append(freeze_long_lived)
        server.run()
    except AlreadyRunning as err:
        return start.running(str(err))
    except (StartupError, ValueError, OSError, XenstoreError) as err:
        if start.done:
            log.exception("stopped by an error")
            return 1
        return start.failed(describe_error(err))
    except Exception as err:
        log.debug("start-up failed", exc_info=True)
        if start.done:
            log.exception("stopped by an error")
            return 1
        return start.failed(f"internal error: {type(err).__name__}: {describe_error(err)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

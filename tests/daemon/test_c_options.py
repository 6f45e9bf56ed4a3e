"""C xenstored's command-line options: each one's setting (sans I/O), in C's order, and
the ones accepted but ignored (one line each) or refused."""

from __future__ import annotations

import os

import pytest

from pyxenstored.cli import UsageError, build_config, build_parser, c_command_line, parse_args
from pyxenstored.liveconfig.registry import QUOTAS, SETTINGS


def settings(*argv: str) -> dict[str, object]:
    config, _ = build_config(parse_args(argv))
    return config.settings


def ignored(*argv: str) -> list[str]:
    return build_config(parse_args(argv))[1]


LIMITS = [
    (["-E", "5"], "quota/nodes", 5),
    (["--entry-nb", "5"], "quota/nodes", 5),
    (["--entry-nb=6"], "quota/nodes", 6),
    (["-E7"], "quota/nodes", 7),
    (["-S", "100"], "quota/node-size", 100),
    (["--entry-size", "100"], "quota/node-size", 100),
    (["-W", "7"], "quota/watches", 7),
    (["--watch-nb", "7"], "quota/watches", 7),
    (["-t", "3"], "quota/transactions", 3),
    (["--transaction", "3"], "quota/transactions", 3),
    (["-A", "2"], "quota/node-permissions", 2),
    (["--perm-nb", "2"], "quota/node-permissions", 2),
    (["-M", "100"], "quota/path-max", 100),
    (["--path-max", "100"], "quota/path-max", 100),
    (["-M", "9999"], "quota/path-max", 2048),  # C lowers it to XENSTORE_REL_PATH_MAX
    (["-Q", "path-max=5000"], "quota/path-max", 2048),
    (["-Q", "memory=1000"], "quota/memory", 1000),
    (["-Qmemory=1000"], "quota/memory", 1000),
    (["--quota", "outstanding=4"], "quota/outstanding", 4),
    (["--quota=transaction-nodes=9"], "quota/transaction-nodes", 9),
    (["-q", "memory=500"], "quota-soft/memory", 500),
    (["--quota-soft", "memory=0"], "quota-soft/memory", 0),
    (["-V"], "log/level", "debug"),
    (["--verbose"], "log/level", "debug"),
    (["-T", "/var/log/xen/trace"], "log/access-file", "/var/log/xen/trace"),
    (["--trace-file", "/t"], "log/access", True),
]


@pytest.mark.parametrize(("argv", "name", "value"), LIMITS, ids=lambda v: str(v))
def test_each_c_option_sets_its_setting(argv: list[str], name: str, value: object) -> None:
    assert settings(*argv)[name] == value


@pytest.mark.parametrize("what", QUOTAS)
def test_every_quota_name_of_c_is_ours(what: str) -> None:
    assert settings("-Q", f"{what}=17")[f"quota/{what}"] == 17


def test_every_c_setting_names_a_registry_setting() -> None:
    names = {s.name for s in SETTINGS}
    argv = ["-E1", "-S1", "-W1", "-t1", "-A1", "-M1", "-q", "memory=1", "-T/x", "-V"]
    assert set(settings(*argv)) <= names


def test_the_last_option_wins_as_in_c() -> None:
    assert settings("-E", "5", "-E", "6")["quota/nodes"] == 6
    assert settings("-Q", "nodes=5", "-E", "6")["quota/nodes"] == 6
    assert settings("-E", "6", "-Q", "nodes=5")["quota/nodes"] == 5


def test_our_options_win_over_cs_and_set_wins_over_all() -> None:
    assert settings("-E", "5", "--set", "quota/nodes=9")["quota/nodes"] == 9
    assert settings("-T", "/a", "--access-log", "/b")["log/access-file"] == "/b"
    assert settings("-V", "--log-level", "warning")["log/level"] == "warning"


def test_relative_log_paths_become_absolute_for_the_detached_daemon() -> None:
    assert settings("-T", "trace.log")["log/access-file"] == os.path.abspath("trace.log")
    config, _ = build_config(parse_args(["-F", "pid", "--socket", "s", "--sim-xen", "x"]))
    assert config.pid_file == os.path.abspath("pid")
    assert config.socket_path == os.path.abspath("s")
    assert config.sim_xen_dir == os.path.abspath("x")


def test_options_that_are_not_settings() -> None:
    args = parse_args(["-N", "-P", "-p", "5", "-F", "/run/p"])
    assert args.no_fork and args.output_pid
    config, notes = build_config(args)
    assert config.priv_domid == 5 and config.pid_file == "/run/p" and notes == []
    assert parse_args(["--foreground"]).no_fork
    assert parse_args(["--no-fork"]).no_fork
    assert not parse_args([]).no_fork  # detach by default, as C
    assert build_config(parse_args(["-D"]))[0].xen == "none"
    assert build_config(parse_args(["--no-domain-init"]))[0].xen == "none"
    config, notes = build_config(parse_args(["--stub-domain", "-e", "7"]))
    assert config.event_port == 7 and notes == []
    assert build_config(parse_args(["--event", "7", "--stub-domain"]))[0].event_port == 7
    assert build_config(parse_args(["-m", "0"]))[1] == []


IGNORED = [
    (["-I"], "--internal-db: ignored: the store always lives in memory"),
    (["-Ioff"], "--internal-db=off: ignored"),
    (["--internal-db=on"], "--internal-db=on: ignored"),
    (["-K"], "--keep-orphans: ignored: a dead domain's nodes are always removed"),
    (["-w", "watch-event=5"], "--timeout watch-event=5: ignored: undelivered watch events"),
    (["--trace-control=+io"], "--trace-control=+io: ignored"),
    (["-m", "3"], "--master-domid 3: ignored: dom0's own ring is served as domain 0's"),
    (["-e", "9"], "--event 9: ignored: dom0's port is read from /proc/xen/xsd_port"),
]


@pytest.mark.parametrize(("argv", "line"), IGNORED, ids=lambda v: str(v))
def test_options_we_do_not_have_are_accepted_with_one_line(argv: list[str], line: str) -> None:
    notes = ignored(*argv)
    assert len(notes) == 1 and notes[0].startswith(line), notes
    assert "\n" not in notes[0]


REFUSED = [
    (["-E", "abc"], 'invalid parameter value "abc"'),
    (["-E", "5x"], 'invalid parameter value "5x"'),
    (["-W", ""], 'invalid parameter value ""'),
    (["-t", "2147483648"], 'invalid parameter value "2147483648"'),
    (["-Q", "foo=1"], 'unknown quota "foo=1"'),
    (["-Q", "memory"], "'memory' must be given as <what>=<nb>"),
    (["-Q", "memory=x"], 'invalid parameter value "x"'),
    (["-q", "nodes=1"], 'unknown quota "nodes=1"'),
    (["-w", "foo=1"], 'unknown timeout "foo=1"'),
    (["-w", "watch-event=-1"], 'invalid parameter value "-1"'),
    (["--trace-control=io"], 'Illegal trace switch "io"'),
    (["--trace-control=+foo"], 'Illegal trace switch "+foo"'),
    (["-R"], "-R/--no-recovery is not supported"),
    (["-D", "--sim-xen", "/x"], "-D/--no-domain-init serves no rings"),
    (["-D", "--xen", "linux"], "-D/--no-domain-init serves no rings"),
    (["--stub-domain", "--socket", "/s"], "--stub-domain serves no Unix socket"),
    (["--set", "quota/nodes=lots"], "--set quota/nodes=lots: not a non-negative integer"),
    (["--log-level", "loud"], "--log-level loud:"),
]


@pytest.mark.parametrize(("argv", "message"), REFUSED, ids=lambda v: str(v))
def test_bad_options_are_refused_with_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        build_config(parse_args(argv))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--no-such-option"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyxenstored: unrecognized arguments")


def test_capital_h_is_help_as_in_c(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["-H"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--entry-nb", "--no-fork", "--quota-soft", "--log-file", "--master-domid"):
        assert flag in out


C_COMMAND_LINES = [
    # (our command line, what a live update passes on to a C xenstored)
    (["-N", "--socket", "/s", "-U"], ["-N", "-U"]),
    (["--log-file", "/l", "--pid-file", "/p", "-U"], ["--pid-file", "/p", "-U"]),
    (["--log-file=/l", "--pid-file=/p"], ["--pid-file=/p"]),
    (["--access-log", "/a", "-T", "/t", "-E", "5", "-E6"], ["-T", "/t", "-E", "5", "-E6"]),
    (["-NP", "--xen", "linux", "-Q", "memory=9"], ["-N", "-P", "-Q", "memory=9"]),
    (["--set", "quota/nodes=5", "-K", "--stub-domain", "-e", "7"], ["-K", "-e", "7"]),
    (
        ["-I", "-V", "--no-journal", "--trace-control", "+io"],
        ["-I", "-V", "--trace-control", "+io"],
    ),
    (["--metrics-listen", "9100", "-p", "1", "-R"], ["-p", "1", "-R"]),
    (["-I", "on", "-F", "/p"], ["-I", "on", "-F", "/p"]),
    ([], []),
]


@pytest.mark.parametrize(("ours", "for_c"), C_COMMAND_LINES)
def test_a_live_update_to_c_passes_only_c_options(ours: list[str], for_c: list[str]) -> None:
    assert c_command_line(ours) == for_c
    # What is kept still means the same to us (C and we read C's options alike).
    parse_args(for_c)


def test_every_c_option_is_kept() -> None:
    """No option of C's group is lost: each one, alone, survives as it is."""
    parser = build_parser()
    group = next(g for g in parser._action_groups if g.title == "C xenstored's options")
    for action in group._group_actions:
        for option in action.option_strings:
            if option == "-H":
                continue  # help: C has no -H
            argv = [option] if action.nargs in (0, "?") else [option, "1"]
            assert c_command_line(argv) == argv, option

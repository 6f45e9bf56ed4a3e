"""C xenstored's options as setting values (sans I/O): C's number reader, C's order,
C's words for bad values. The command line around it is tested in tests/daemon."""

from __future__ import annotations

import pytest

from pyxenstored.errors import Invalid
from pyxenstored.liveconfig.coptions import LIMITS, c_uint, translate
from pyxenstored.liveconfig.registry import QUOTAS, SETTINGS


def test_c_uint_is_cs_get_optval_uint() -> None:
    assert c_uint("0") == 0 and c_uint("2147483647") == 2**31 - 1
    for bad in ("", " 1", "+1", "-1", "0x10", "1.5", "\u0661"):  # an Arabic-Indic one
        with pytest.raises(Invalid):
            c_uint(bad)


def test_translate_is_pure_and_ordered() -> None:
    out = translate([("entry-nb", "1"), ("keep-orphans", None), ("entry-nb", "2")])
    assert out.settings == {"quota/nodes": 2}
    assert len(out.ignored) == 1
    with pytest.raises(ValueError):
        translate([("pid-file", "/x")])  # not a setting: the command line's own


def test_every_setting_named_is_a_registry_setting() -> None:
    names = {s.name for s in SETTINGS}
    assert set(LIMITS.values()) <= names
    assert {f"quota/{q}" for q in QUOTAS} <= names


def test_c_messages() -> None:
    cases = [
        ([("quota", "foo=1")], 'unknown quota "foo=1"'),
        ([("quota-soft", "nodes=1")], 'unknown quota "nodes=1"'),
        ([("quota", "memory")], "'memory' must be given as <what>=<nb>"),
        ([("timeout", "watch-event")], "'watch-event' must be given as <what>=<seconds>"),
        ([("timeout", "foo=1")], 'unknown timeout "foo=1"'),
        ([("trace-control", "obj")], 'Illegal trace switch "obj"'),
        ([("entry-nb", "")], 'invalid parameter value ""'),
    ]
    for options, message in cases:
        with pytest.raises(Invalid) as info:
            translate(options)
        assert str(info.value) == message


def test_path_max_is_lowered_to_xenstore_rel_path_max() -> None:
    assert translate([("path-max", "4096")]).settings == {"quota/path-max": 2048}
    assert translate([("quota", "path-max=100")]).settings == {"quota/path-max": 100}

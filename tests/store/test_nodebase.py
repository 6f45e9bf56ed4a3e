"""The node storage (store.nodebase, issue 10 item 5): the compiled build and the pure
one keep one contract, the compiled one is what this checkout uses where a C compiler
built it, and it costs 48 bytes a node, with no garbage-collector header."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig
from typing import Any

import pytest

from pyxenstored.liveconfig.stats import LiveNode
from pyxenstored.store import nodebase
from pyxenstored.store.node import NO_CHILDREN, Node, SharedNode
from pyxenstored.store.nodebase import PureNodeBase

ROOT = ((0, 0),)
PURE_ASKED = os.environ.get("PYXENSTORED_PURE", "") not in ("", "0")


def compiled_base() -> Any:
    """The compiled NodeBase, or None where it was not built."""
    try:
        from pyxenstored.store import _nodebase
    except ImportError:
        return None
    return _nodebase.NodeBase


CompiledNodeBase: Any = compiled_base()

BASES = [PureNodeBase] + ([CompiledNodeBase] if CompiledNodeBase is not None else [])


def compiler_present() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def test_the_compiled_build_is_used_where_it_could_be_built() -> None:
    if PURE_ASKED:
        assert not nodebase.COMPILED and nodebase.NodeBase is PureNodeBase
        return
    if CompiledNodeBase is None:
        # pip builds it wherever the compiler Python was built with is present.
        assert not compiler_present(), "a C compiler is here but _nodebase was not built"
        pytest.skip("no C compiler at install time: pure Python node storage")
    assert nodebase.COMPILED and nodebase.NodeBase is CompiledNodeBase
    assert Node.__mro__[1] is CompiledNodeBase


@pytest.mark.parametrize("base", BASES, ids=lambda b: b.__module__.rsplit(".", 1)[1])
def test_both_builds_keep_one_contract(base: type[PureNodeBase]) -> None:
    node = base(b"v", ROOT)
    assert (node.value, node.perms, node.children, node.gen) == (b"v", ROOT, (), 0)
    assert node.children is NO_CHILDREN
    assert base(b"", ROOT, [], 3).children is NO_CHILDREN  # empty -> the shared tuple
    kids = ("/a", "/b")
    node = base(b"", ROOT, kids, gen=2**40)
    assert node.children is kids and node.gen == 2**40 and type(node.gen) is int
    node.value, node.perms, node.children, node.gen = b"w", ((1, 5),), ["/x"], 7
    assert (node.value, node.perms, node.children, node.gen) == (b"w", ((1, 5),), ["/x"], 7)
    with pytest.raises(TypeError):
        base(b"")  # type: ignore[call-arg]
    bare = base.__new__(base)
    with pytest.raises(AttributeError):
        _ = bare.value


@pytest.mark.skipif(CompiledNodeBase is None, reason="the compiled node storage is not built")
def test_a_compiled_node_is_48_bytes_and_never_collected() -> None:
    node = CompiledNodeBase(b"v", ROOT, None, 12345)
    assert sys.getsizeof(node) == 48 and not gc.is_tracked(node)
    with pytest.raises(OverflowError):
        node.gen = 2**63
    with pytest.raises(TypeError):
        node.gen = "7"  # the compiled build checks the type (mypy does for both)
    if nodebase.COMPILED:
        plain = Node(b"v", ROOT, gen=2**40)
        assert sys.getsizeof(plain) == 48 and not gc.is_tracked(plain)
        plain.share()  # the shared twin has the same layout: the class changes in place
        assert type(plain) is SharedNode and plain.shared and not gc.is_tracked(plain)
        # A subclass that adds a field (a callable: cycles possible) is collected.
        live = LiveNode(lambda: "7", ROOT)
        assert gc.is_tracked(live) and live.value == b"7"


def test_nodes_copy_and_pickle_with_their_class_and_fields() -> None:
    node = Node(b"v", ROOT, ("/a/b",), gen=99)
    node.share()
    for twin in (copy.deepcopy(node), pickle.loads(pickle.dumps(node)), copy.copy(node)):
        assert type(twin) is SharedNode and twin is not node
        assert (twin.value, twin.perms, list(twin.children), twin.gen) == (
            b"v", ROOT, ["/a/b"], 99)  # fmt: skip
    live = LiveNode(lambda: "7", ROOT)
    twin = copy.copy(live)
    assert type(twin) is LiveNode and twin.value == b"7" and twin.compute is live.compute


def test_pure_python_is_selectable_from_the_environment() -> None:
    code = (
        "from pyxenstored.store import nodebase, node;"
        "print(nodebase.COMPILED, node.Node.__mro__[1].__name__)"
    )
    env = dict(os.environ, PYXENSTORED_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "PureNodeBase"], out.stderr

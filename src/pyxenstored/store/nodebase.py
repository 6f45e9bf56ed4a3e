"""The storage under every tree node, compiled where it can be (issue 10 item 5).

:class:`NodeBase` holds a node's four fields: ``value``, ``perms``, ``children`` and
``gen``. It has two interchangeable builds with one contract:

* the compiled one, ``_nodebase.NodeBase`` (``_nodebase.c``, built by ``pip install``
  when a C compiler is there): 48 bytes a node, the generation stored as a C integer and
  no garbage-collector header (its fields can never refer back to a node, so no cycle
  passes through one);
* the pure Python one below: a slotted object of 64 bytes plus a 32-byte int for its
  generation (distinct in every node): 96 bytes.

A tree of short values costs about 250 bytes a node in pure Python, and a third of
that is this storage: the compiled build is what brings a node under 200 bytes
(benchmarks/RESULTS.md). Nothing else differs: ``gen`` reads back as an int in both
(the compiled build refuses one outside a signed 64-bit integer with OverflowError,
which no generation reaches), and an unset field raises AttributeError in both.

The compiled build is used when it was built and importable, unless the environment
says ``PYXENSTORED_PURE=1`` (:mod:`pyxenstored.accel`): the pure build is kept, tested
(``make test`` runs the store, core and state suites under it too) and selectable.
``COMPILED`` says which one this process uses.
"""

from __future__ import annotations

from types import FunctionType
from typing import TYPE_CHECKING, Any, cast

from ..accel import PURE
from ..protocol.perms import Perms

__all__ = ["COMPILED", "NodeBase", "NodeStorage", "PureNodeBase"]

#: The child list of nodes without children (immutable, so shared by every leaf).
_EMPTY: tuple[str, ...] = ()


class PureNodeBase:
    """A node's fields in pure Python (the module doc)."""

    __slots__ = ("children", "gen", "perms", "value")

    value: bytes
    perms: Perms
    children: tuple[str, ...] | list[str] | dict[str, None]
    gen: int

    def __init__(
        self,
        value: bytes,
        perms: Perms,
        children: tuple[str, ...] | list[str] | dict[str, None] | None = None,
        gen: int = 0,
    ) -> None:
        self.value = value
        self.perms = perms
        self.children = children if children else _EMPTY
        self.gen = gen


class NodeStorage(type):
    """The metaclass of :class:`~.node.Node` and of its shared twin.

    With the pure build it is ``type``. With the compiled one a class statement would
    give every node a garbage-collector header back (CPython 3.11 collects every class
    that ``type()`` makes), so this makes the class with ``_nodebase.derive()`` instead,
    and copies the class body onto it. Such a class adds no fields (``__slots__ = ()``
    only) and may derive only from NodeBase or another class it made. A class statement
    that derives from one without naming this metaclass (``LiveNode``) is an ordinary
    collected class, as it must be when it adds fields.
    """

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> NodeStorage:
        if not COMPILED:
            return super().__new__(mcls, name, bases, namespace)
        if namespace.get("__slots__", ()) != () or len(bases) != 1:
            raise TypeError(f"{name}: a NodeStorage class has one base and adds no fields")
        cls = cast(NodeStorage, _derive(f"{namespace['__module__']}.{name}", bases[0]))
        for key, value in namespace.items():
            if key in ("__module__", "__qualname__", "__slots__", "__classcell__"):
                continue
            if key == "__init_subclass__" and isinstance(value, FunctionType):
                value = classmethod(value)  # what type() does implicitly
            setattr(cls, key, value)
        cls.__qualname__ = namespace.get("__qualname__", name)
        cell = namespace.get("__classcell__")
        if cell is not None:  # zero-argument super() in the body refers to cls
            cell.cell_contents = cls
        return cls


COMPILED: bool
if TYPE_CHECKING:  # both builds have one contract: type-check against the pure one
    from ._nodebase import derive as _derive

    NodeBase = PureNodeBase
elif PURE:
    NodeBase, COMPILED = PureNodeBase, False
else:
    try:
        from ._nodebase import NodeBase
        from ._nodebase import derive as _derive
    except ImportError:  # not built (no C compiler at install time): pure Python
        NodeBase, COMPILED = PureNodeBase, False
    else:
        COMPILED = True

"""Live configuration nodes under ``/tool/xenstored/`` (issue: promise 5).

Layout (every node owned by the privileged domain, mode ``n``: other domains get EACCES
for any path here, existing or not, so nothing leaks):

* ``<setting>``: one node per registry setting (``quota/nodes``, ``log/access``, ...).
  WRITE parses and validates (EINVAL on a bad value, nothing changes) and takes effect
  from the next request; inside a transaction, at its commit. RM resets to the default.
* ``domain/<domid>/quota/<name>``: a per-domain override; ``domain/<domid>/class``:
  the name of a quota class. RM removes them.
* ``class/<name>/quota/<quota>``: a named quota class (``driver`` exists from the start).
* ``stats/...``: read-only counters computed at read time; writes get EACCES.

There is deliberately no ``domid`` node: libxl reads ``/tool/xenstored/domid`` to detect
a xenstore stub domain.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..core.caller import Caller
from ..core.confighooks import CONFIG_PREFIX
from ..core.engine import Engine
from ..core.quota import QUOTA_NAMES
from ..core.transactions import COALESCE
from ..errors import Invalid, NoEntry, PermissionDenied
from ..protocol.perms import NONE
from ..protocol.wire import Op
from ..store.node import Node
from .kinds import integer
from .registry import Registry
from .stats import LiveNode, domain_figures, format_figures

__all__ = ["DEFAULT_CLASSES", "ConfigTree"]

#: Quota classes that exist from the start; operators add their own under class/.
DEFAULT_CLASSES: dict[str, dict[str, int]] = {
    "driver": {"nodes": 20000, "watches": 1024, "transactions": 32, "memory": 64 << 20},
}

_OVERRIDE = re.compile(r"domain/([0-9]{1,5})/quota/([a-z-]+)\Z")
_DOMAIN_CLASS = re.compile(r"domain/([0-9]{1,5})/class\Z")
_CLASS_QUOTA = re.compile(r"class/([A-Za-z0-9_-]+)/quota/([a-z-]+)\Z")
_STRUCTURE = re.compile(r"(domain|class)(/[A-Za-z0-9_-]+(/quota)?)?\Z")
_QUOTA_VALUE = integer()
_OP_NAMES = {int(op): op.name for op in Op}
DOMAIN_STATS = CONFIG_PREFIX + "stats/domain"


def _text(value: bytes) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise Invalid("configuration values are ASCII") from None


class ConfigTree:
    """Keeps the registry and the nodes under /tool/xenstored/ in step, both ways."""

    def __init__(self, engine: Engine, registry: Registry, *, adopt: bool = False) -> None:
        """Attach live configuration to ``engine``.

        With ``adopt`` (an engine restored by ``state.snapshot``), the configuration
        already in the tree wins: every setting node holding a valid value becomes the
        registry's value (start values, from the command line say, fill in only what the
        tree lacks or holds invalid), and quota classes, per-domain overrides and
        domain classes come from their nodes (the default classes only if the tree has
        no ``class`` directory). Nodes that already say the right thing are not written
        again: their generations stay, no watch fires, nothing is applied twice.
        """
        self.engine = engine
        self.registry = registry
        self._perms = ((NONE, engine.priv_domid),)
        self._from_tree = False
        registry.listeners.append(self._setting_changed)
        #: nodes that already hold their value (adopted): _install leaves them alone
        self._kept: set[str] = self._adopt() if adopt else set()
        if not adopt or CONFIG_PREFIX + "class" not in engine.tree.nodes:
            for cls, values in DEFAULT_CLASSES.items():
                for q, v in values.items():
                    engine.quotas.set_class_value(cls, q, v)
        for name, value in registry.values.items():
            self.apply(name, value)
        self._install()
        engine.config = self

    # -- set-up ----------------------------------------------------------------------
    def _install(self) -> None:
        e = self.engine
        for name in self.registry.specs:
            self._ensure(CONFIG_PREFIX + name, self.registry.format(name).encode())
        for cls, values in e.quotas.classes.items():
            for q, v in values.items():
                self._ensure(f"{CONFIG_PREFIX}class/{cls}/quota/{q}", b"%d" % v)
        self._ensure(CONFIG_PREFIX + "domain", b"")
        for name, compute in self._counters().items():
            self.add_stat(name, compute)
        self._sync_domain_stats()
        e.on_domain = self._domain_event

    # -- per-domain statistics (stats/domain/<domid>) ----------------------------------
    def _sync_domain_stats(self) -> None:
        """One node for the privileged domain and each introduced domain; a node left
        by a snapshot or journal for a domain that is gone goes."""
        e = self.engine
        wanted = {e.priv_domid, *e.domains}
        for domid in sorted(wanted):
            self._add_domain_stat(domid)
        top = e.tree.nodes.get(DOMAIN_STATS)
        for name in top.names() if top is not None else ():
            if not name.isdigit() or int(name) not in wanted:
                e.tree.remove(f"{DOMAIN_STATS}/{name}")

    def _add_domain_stat(self, domid: int) -> None:
        e = self.engine
        self.add_stat(f"domain/{domid}", lambda: format_figures(domain_figures(e, domid)))

    def _domain_event(self, domid: int, introduced: bool) -> None:
        path = f"{DOMAIN_STATS}/{domid}"
        if introduced:
            self._add_domain_stat(domid)
        elif domid != self.engine.priv_domid and path in self.engine.tree.nodes:
            self.engine.tree.remove(path)

    def _ensure(self, path: str, value: bytes) -> None:
        """Write ``path`` as the daemon unless it already holds ``value`` or was
        adopted as it is (it may spell the value differently: ``1`` for ``on``)."""
        node = self.engine.tree.nodes.get(path)
        if path in self._kept or (node is not None and node.value == value):
            return
        self.engine.system_write(path, value)

    def _adopt(self) -> set[str]:
        """Take settings, quota classes, overrides and domain classes from the tree;
        return the paths of the nodes taken."""
        nodes = self.engine.tree.nodes
        registry = self.registry
        kept: set[str] = set()
        for name in registry.specs:
            path = CONFIG_PREFIX + name
            node = nodes.get(path)
            if node is None:
                continue
            try:
                registry.values[name] = registry.parse(name, _text(node.value))
            except Invalid:
                continue  # _install writes the start value over it
            kept.add(path)
        # Classes first: a domain's class must name one that exists.
        for rel in ("class", "domain"):
            for path, node in self._subtree(CONFIG_PREFIX + rel):
                try:
                    self.check_write(self.engine._self, path, node.value)
                except (Invalid, PermissionDenied):
                    continue  # not ours, or not valid: left as it is, never applied
                self.written(path, node.value)
                kept.add(path)
        return kept

    def _subtree(self, top: str) -> list[tuple[str, Node]]:
        """``top`` and the nodes below it, parents first."""
        nodes = self.engine.tree.nodes
        found: list[tuple[str, Node]] = []
        stack = [top]
        while stack:
            path = stack.pop()
            node = nodes.get(path)
            if node is None:
                continue
            found.append((path, node))
            stack.extend(reversed(node.children))
        return found

    def add_stat(self, name: str, compute: Callable[[], str]) -> None:
        """Publish a read-only counter at ``stats/<name>`` (the runtime adds its own).

        A node already there (a restored snapshot of the counter) is made computed in
        place, keeping its generation."""
        e = self.engine
        path = CONFIG_PREFIX + "stats/" + name
        parent = path[: path.rfind("/")]
        if parent not in e.tree.nodes:
            e.system_write(parent, b"")
        tree = e.tree
        if path not in tree.nodes:
            tree.create(path, b"", self._perms)
        tree.replace(path, LiveNode(compute, self._perms))

    def _counters(self) -> dict[str, Callable[[], str]]:
        e = self.engine
        counters: dict[str, Callable[[], str]] = {
            "connections": lambda: str(len(e.connections)),
            "domains": lambda: str(len(e.domains)),
            "nodes": lambda: str(len(e.tree.nodes)),
            "watches": lambda: str(e.watches.count),
            "requests/total": lambda: str(sum(e.op_counts)),
            "transactions/open": lambda: str(
                sum(len(c.transactions) for c in e.connections.values())
            ),
            "transactions/committed": lambda: str(e.stats["commits"]),
            "transactions/refused": lambda: str(e.stats["conflicts"]),
            "events/sent": lambda: str(e.stats["events"]),
            "events/dropped": lambda: str(e.stats["events_dropped"]),
            # What the nodes cost their owners, by the same measure as the memory quota.
            "memory/store": lambda: str(sum(e.tree.owner_bytes.values())),
        }
        for op, name in _OP_NAMES.items():
            if op < 32 and op not in (Op.WATCH_EVENT, Op.ERROR, Op.RESTRICT):
                counters[f"requests/{name}"] = lambda op=op: str(e.op_counts[op])  # type: ignore[misc]
        return counters

    # -- settings -> engine ----------------------------------------------------------
    def apply(self, name: str, value: Any) -> None:
        """Make the engine use a setting's value from the next request on."""
        e = self.engine
        limits = e.limits
        if name.startswith("quota/"):
            q = name[6:]
            if q == "rule":
                limits.rule = value
            else:
                setattr(limits, q.replace("-", "_"), value)
        elif name == "quota-soft/memory":
            limits.soft_memory = value
        elif name.startswith("driver/"):
            e.quotas.set_per_device(name[7:], value)
        elif name == "transaction/conflicts":
            e.conflicts = value if value else COALESCE
        elif name == "conflict/burst-limit":
            e.conflict_guard.burst = value
        elif name == "conflict/aggregate":
            e.conflict_guard.aggregate = value
        elif name == "features":
            e.features = value
        elif name == "limits/event-queue-bytes":
            e.event_queue_max = value
        elif name == "log/refusal-seconds":
            e.refusals.interval = value

    def _setting_changed(self, name: str, value: Any) -> None:
        self.apply(name, value)
        if not self._from_tree:
            self.engine.system_write(CONFIG_PREFIX + name, self.registry.format(name).encode())

    # -- ConfigHooks -----------------------------------------------------------------
    @staticmethod
    def _privileged(caller: Caller) -> None:
        if not caller.privileged:
            raise PermissionDenied("live configuration is for the privileged domain")

    def check_write(self, caller: Caller, path: str, value: bytes) -> None:
        self._privileged(caller)
        rel = path[len(CONFIG_PREFIX) :]
        text = _text(value)
        if rel in self.registry.specs:
            self.registry.parse(rel, text)
        elif rel == "stats" or rel.startswith("stats/"):
            raise PermissionDenied("statistics are read-only")
        elif (m := _OVERRIDE.match(rel)) or (m := _CLASS_QUOTA.match(rel)):
            if m.group(2) not in QUOTA_NAMES:
                raise Invalid(f"unknown quota {m.group(2)!r}")
            _QUOTA_VALUE.parse(text)
        elif _DOMAIN_CLASS.match(rel):
            if text and text not in self.engine.quotas.classes:
                raise Invalid(f"unknown quota class {text!r}")
        elif _STRUCTURE.match(rel):
            if text:
                raise Invalid("directories here hold no value")
        else:
            raise Invalid(f"no setting {rel!r}")

    def check_mkdir(self, caller: Caller, path: str) -> None:
        self._privileged(caller)
        if not _STRUCTURE.match(path[len(CONFIG_PREFIX) :]):
            raise Invalid("only domain/ and class/ directories can be made here")

    def check_rm(self, caller: Caller, path: str) -> bytes | None:
        self._privileged(caller)
        rel = path[len(CONFIG_PREFIX) :]
        if rel in self.registry.specs:
            return self.registry.format(rel, self.registry.specs[rel].default).encode()
        if rel.startswith(("domain/", "class/")):
            return None
        raise PermissionDenied("this part of the configuration cannot be removed")

    def check_set_perms(self, caller: Caller, path: str) -> None:
        raise Invalid("permissions of configuration nodes are fixed")

    def written(self, path: str, value: bytes) -> None:
        rel = path[len(CONFIG_PREFIX) :]
        text = value.decode("ascii")
        quotas = self.engine.quotas
        if rel in self.registry.specs:
            self._from_tree = True
            try:
                self.registry.set(rel, self.registry.parse(rel, text))
            finally:
                self._from_tree = False
        elif m := _OVERRIDE.match(rel):
            quotas.set_override(int(m.group(1)), m.group(2), int(text))
        elif m := _CLASS_QUOTA.match(rel):
            quotas.set_class_value(m.group(1), m.group(2), int(text))
        elif m := _DOMAIN_CLASS.match(rel):
            quotas.set_domain_class(int(m.group(1)), text or None)

    def removed(self, paths: list[str]) -> None:
        quotas = self.engine.quotas
        for path in paths:
            rel = path[len(CONFIG_PREFIX) :]
            if m := _OVERRIDE.match(rel):
                quotas.clear_override(int(m.group(1)), m.group(2))
            elif m := _CLASS_QUOTA.match(rel):
                quotas.clear_class_value(m.group(1), m.group(2))
            elif m := _DOMAIN_CLASS.match(rel):
                quotas.set_domain_class(int(m.group(1)), None)

    # -- the daemon's own route (CONTROL, SET_QUOTA) --------------------------------
    def write(self, rel: str, text: str) -> None:
        path = CONFIG_PREFIX + rel
        value = text.encode("ascii")
        self.check_write(self.engine._self, path, value)
        self.engine.system_write(path, value)
        self.written(path, value)

    def read(self, rel: str) -> str:
        node = self.engine.tree.nodes.get(CONFIG_PREFIX + rel)
        if node is None:
            raise NoEntry(rel)
        return node.value.decode("ascii")

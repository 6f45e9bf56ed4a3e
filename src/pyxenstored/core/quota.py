"""Quota limits: global values, per-domain overrides, named classes, and the allowance a
domain earns for each backend device it serves (xenstore-protocol.md §6).

Quotas bind only unprivileged domain connections; the privileged domain and sockets are
exempt. C xenstored changed every boundary in 4.22 (``>=`` where ≤4.21 had ``>``); we
default to the 4.17-4.21 rule, which deployed guests and toolstacks were tuned against,
and ``rule = "4.22"`` selects the newer one. A limit of 0 means "no limit".

Driver domains: a directory ``/local/domain/<d>/backend/<type>/<frontend>/<devid>``
created by the privileged domain is one *device* served by domain d. Each device raises
d's limits by the per-device allowance (``driver/<quota>`` settings); removing the
directory lowers them again. Only the privileged domain's creations count, so a guest
cannot grant itself an allowance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Literal

__all__ = [
    "HARD_QUOTA_NAMES",
    "QUOTA",
    "QUOTAS",
    "QUOTA_NAMES",
    "RULES",
    "Limits",
    "Quota",
    "QuotaRule",
    "QuotaTable",
    "backend_device_domain",
]

#: C xenstored's quota boundaries: "4.21" (and before) refuses when count > limit,
#: "4.22" when count >= limit.
QuotaRule = Literal["4.21", "4.22"]
RULES: tuple[QuotaRule, ...] = ("4.21", "4.22")


@dataclass(frozen=True, slots=True)
class Quota:
    """One quota, as every route shows it: ``name`` is C's (GET/SET_QUOTA, CONTROL
    ``quota``), ``setting`` its node under ``/tool/xenstored/``, ``help`` the setting's
    description and ``c_help`` C's text in ``xenstore-control quota``."""

    name: str
    default: int
    unit: str
    help: str
    c_help: str

    @property
    def setting(self) -> str:
        """Its node under ``/tool/xenstored/`` (soft-memory, a warning level, is C's
        ``quota-soft``)."""
        return "quota-soft/memory" if self.name == "soft-memory" else f"quota/{self.name}"


#: Every quota, in C's enum order (the order GET_QUOTA lists them in).
QUOTAS: tuple[Quota, ...] = (
    Quota("nodes", 1000, "nodes", "nodes a domain may own", "Nodes per domain"),
    Quota("watches", 128, "watches", "watches per domain", "Watches per domain"),
    Quota(
        "outstanding",
        20,
        "requests",
        "requests in flight per domain before its ring is not read",
        "Outstanding requests per domain",
    ),
    Quota(
        "memory",
        2621440,
        "bytes",
        "memory per domain before its ring is not read",
        "Total Xenstore memory per domain (error level)",
    ),
    Quota(
        "soft-memory",
        2097152,
        "bytes",
        "memory per domain above which a warning is logged",
        "Total Xenstore memory per domain (warning level)",
    ),
    Quota(
        "transactions",
        10,
        "transactions",
        "open transactions per domain",
        "Transactions per domain",
    ),
    Quota(
        "transaction-nodes",
        1024,
        "nodes",
        "nodes one transaction may touch",
        "Max. number of accessed nodes per transaction",
    ),
    Quota(
        "node-permissions",
        5,
        "entries",
        "permission entries per node",
        "Max. number of permissions per node",
    ),
    Quota(
        "path-max",
        2048,
        "bytes",
        "path length after /local/domain/<N>/",
        "Max. length of a node path",
    ),
    Quota(
        "node-size",
        2048,
        "bytes",
        "node size: value, permissions and child names",
        "Max. size of a node",
    ),
)
#: The quotas by name.
QUOTA: dict[str, Quota] = {q.name: q for q in QUOTAS}
#: The names GET_QUOTA lists, in C's enum order.
QUOTA_NAMES: tuple[str, ...] = tuple(q.name for q in QUOTAS)
#: The limits proper (CONTROL ``quota``, settings ``quota/<name>``): all but soft-memory.
HARD_QUOTA_NAMES: tuple[str, ...] = tuple(n for n in QUOTA_NAMES if n != "soft-memory")


@dataclass
class Limits:
    """Global quota values (the registry keeps them in step with the settings), and the
    boundary rule: every 4.21/4.22 decision is one of the methods below."""

    nodes: int = QUOTA["nodes"].default
    watches: int = QUOTA["watches"].default
    transactions: int = QUOTA["transactions"].default
    outstanding: int = QUOTA["outstanding"].default
    memory: int = QUOTA["memory"].default
    soft_memory: int = QUOTA["soft-memory"].default
    transaction_nodes: int = QUOTA["transaction-nodes"].default
    node_permissions: int = QUOTA["node-permissions"].default
    path_max: int = QUOTA["path-max"].default
    node_size: int = QUOTA["node-size"].default
    rule: QuotaRule = "4.21"

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        # ``on_change`` (not a field) is told of every change: the QuotaTable drops its
        # memo of resolved limits.
        if name != "on_change":
            hook = self.__dict__.get("on_change")
            if hook is not None:
                hook()

    def exceeded(self, count: int, limit: int) -> bool:
        """Whether ``count`` (the size after the operation) breaks ``limit``."""
        if not limit:
            return False
        return count >= limit if self.rule == "4.22" else count > limit

    def exceeded_before_adding(self, count: int, limit: int) -> bool:
        """Whether one more may not be added to the ``count`` a domain has now (WATCH,
        TRANSACTION_START): C checks the count before it adds, and 4.22 counts the new
        one too."""
        return self.exceeded(count + 1 if self.rule == "4.22" else count, limit)

    def most(self, limit: int) -> int:
        """The largest count ``limit`` allows (0: no limit): the limit itself under
        <=4.21's ``>``, one fewer under 4.22's ``>=``."""
        return limit - 1 if limit and self.rule == "4.22" else limit

    @property
    def watch_error(self) -> str:
        """The error a refused WATCH answers: C <=4.21 said E2BIG, 4.22 says ENOSPC."""
        return "ENOSPC" if self.rule == "4.22" else "E2BIG"

    def value(self, name: str) -> int:
        """The global value of quota ``name`` (``soft-memory`` included)."""
        return int(getattr(self, name.replace("-", "_")))


_LIMIT_FIELDS = frozenset(f.name for f in fields(Limits))
assert all(n.replace("-", "_") in _LIMIT_FIELDS for n in QUOTA_NAMES)


def backend_device_domain(path: str) -> int | None:
    """The backend domain if ``path`` is ``/local/domain/<d>/backend/<t>/<fe>/<devid>``."""
    if not path.startswith("/local/domain/") or path.count("/") != 7:
        return None
    parts = path.split("/")
    if parts[4] != "backend" or not parts[3].isdigit():
        return None
    return int(parts[3])


@dataclass(slots=True)
class QuotaTable:
    """Where a domain's limit comes from: override, then class, then global; plus the
    per-device allowance of a driver domain."""

    limits: Limits
    overrides: dict[int, dict[str, int]] = field(default_factory=dict)
    classes: dict[str, dict[str, int]] = field(default_factory=dict)
    domain_class: dict[int, str] = field(default_factory=dict)
    per_device: dict[str, int] = field(default_factory=dict)
    #: backend device path -> serving domain, and the count per domain.
    device_paths: dict[str, int] = field(default_factory=dict)
    devices: dict[int, int] = field(default_factory=dict)
    #: (domid, name) -> limit: resolved limits, dropped on every change (see changed()).
    memo: dict[tuple[int, str], int] = field(default_factory=dict)
    #: told after every change (the engine drops what depends on limits)
    on_change: Callable[[], None] | None = None
    #: told after a change of the tables (the crash journal records them)
    on_table_change: Callable[[], None] | None = None
    #: told ``(added, path)`` when a backend device starts or stops counting
    on_device: Callable[[bool, str], None] | None = None

    def __post_init__(self) -> None:
        self.limits.on_change = self.changed

    # -- changes (each one drops the memo) --------------------------------------------
    def table_changed(self) -> None:
        """An override, class or per-device value changed: limits may differ
        now (the memo goes), and the crash journal records the tables again."""
        self.memo.clear()
        if self.on_table_change is not None:
            self.on_table_change()

    def changed(self) -> None:
        """Something a limit depends on changed (the global Limits included)."""
        self.memo.clear()
        if self.on_change is not None:
            self.on_change()

    def set_override(self, domid: int, name: str, value: int) -> None:
        self.overrides.setdefault(domid, {})[name] = value
        self.table_changed()

    def clear_override(self, domid: int, name: str) -> None:
        own = self.overrides.get(domid)
        if own is not None:
            own.pop(name, None)
            if not own:
                del self.overrides[domid]
        self.table_changed()

    def set_class_value(self, cls: str, name: str, value: int) -> None:
        self.classes.setdefault(cls, {})[name] = value
        self.table_changed()

    def clear_class_value(self, cls: str, name: str) -> None:
        self.classes.get(cls, {}).pop(name, None)
        self.table_changed()

    def set_domain_class(self, domid: int, cls: str | None) -> None:
        if cls:
            self.domain_class[domid] = cls
        else:
            self.domain_class.pop(domid, None)
        self.table_changed()

    def set_per_device(self, name: str, value: int) -> None:
        self.per_device[name] = value
        self.table_changed()

    # -- lookups ----------------------------------------------------------------------
    def base(self, domid: int, name: str) -> int:
        """The configured limit before any device allowance."""
        own = self.overrides.get(domid)
        if own is not None and name in own:
            return own[name]
        cls = self.domain_class.get(domid)
        if cls is not None:
            values = self.classes.get(cls)
            if values is not None and name in values:
                return values[name]
        return self.limits.value(name)

    def source(self, domid: int, name: str) -> str:
        """The setting (a node name under ``/tool/xenstored/``) that gives ``domid`` its
        limit ``name``: the domain's override, its class's value, or the global one."""
        own = self.overrides.get(domid)
        if own is not None and name in own:
            return f"domain/{domid}/quota/{name}"
        cls = self.domain_class.get(domid)
        if cls is not None and name in self.classes.get(cls, {}):
            return f"class/{cls}/quota/{name}"
        return "quota-soft/memory" if name == "soft-memory" else f"quota/{name}"

    def limit(self, domid: int, name: str) -> int:
        """The limit in force for ``domid`` (0: no limit)."""
        key = (domid, name)
        value = self.memo.get(key)
        if value is None:
            value = self.base(domid, name)
            if value and name in self.per_device:
                value += self.devices.get(domid, 0) * self.per_device[name]
            if len(self.memo) > 65536:
                self.memo.clear()
            self.memo[key] = value
        return value

    def device_added(self, path: str) -> None:
        domid = backend_device_domain(path)
        if domid is not None and path not in self.device_paths:
            self.device_paths[path] = domid
            self.devices[domid] = self.devices.get(domid, 0) + 1
            self.memo.clear()
            if self.on_device is not None:
                self.on_device(True, path)

    def device_removed(self, path: str) -> None:
        domid = self.device_paths.pop(path, None)
        if domid is not None:
            n = self.devices[domid] - 1
            if n:
                self.devices[domid] = n
            else:
                del self.devices[domid]
            self.memo.clear()
            if self.on_device is not None:
                self.on_device(False, path)

    def devices_added(self, paths: list[str]) -> None:
        for path in paths:
            self.device_added(path)

    def devices_removed(self, paths: list[str]) -> None:
        for path in paths:
            self.device_removed(path)

    def forget_domain(self, domid: int) -> None:
        """A domain died: its devices no longer count (overrides and class stay, so a
        driver domain that restarts keeps its configuration)."""
        for path in [p for p, d in self.device_paths.items() if d == domid]:
            self.device_removed(path)

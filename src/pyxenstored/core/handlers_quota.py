"""GET_QUOTA and SET_QUOTA with C xenstored 4.22's names and syntax
(xenstore-protocol.md §1.4, §6.1; privileged only).

* ``GET_QUOTA`` with no argument lists the quota names, blank-separated;
  ``name|`` answers the global value; ``domid|name|`` the value in force for a domain
  (its override, its class, or the global value, plus any driver-domain allowance).
* ``SET_QUOTA name|value|`` changes the global value; ``domid|name|value|`` sets a
  per-domain override. ``soft-`` prefixes ``memory`` only. Values are read with atoi.

Changes go through the live configuration when it is attached, so the tree nodes under
``/tool/xenstored/`` and CONTROL ``quota`` always agree with these messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import Invalid, NoEntry
from ..protocol.args import strings
from ..protocol.numbers import atoi
from ..protocol.wire import OK
from .access import View
from .domains import parse_domid
from .quota import QUOTA_NAMES

if TYPE_CHECKING:
    from .connection import Connection
    from .engine import Engine
    from .transactions import Transaction

__all__ = ["h_get_quota", "h_set_quota", "quota_name"]


def quota_name(raw: bytes) -> str:
    """A quota name from the wire (``soft-memory`` included). Raises Invalid."""
    name = raw.decode("ascii", "replace")
    if name not in QUOTA_NAMES:
        raise Invalid(f"unknown quota {name!r}")
    return name


def _domain(e: Engine, raw: bytes) -> int:
    domid = parse_domid(raw)
    if domid not in e.domains and not e.backend.exists(domid):
        raise NoEntry("no such domain")
    return domid


def h_get_quota(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = strings(payload)
    if len(args) > 2:
        raise Invalid("GET_QUOTA takes at most a domid and a name")
    if not args:
        return " ".join(QUOTA_NAMES).encode("ascii") + b"\0"
    if len(args) == 1:
        return b"%d\0" % e.limits.value(quota_name(args[0]))
    domid = _domain(e, args[0])
    return b"%d\0" % e.quota(domid, quota_name(args[1]))


def h_set_quota(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = strings(payload)
    if not 2 <= len(args) <= 3:
        raise Invalid("SET_QUOTA takes [domid,] name and value")
    domid = _domain(e, args[0]) if len(args) == 3 else None
    name = quota_name(args[-2])
    # C reads the value with atoi() into an unsigned int: "-1" is UINT_MAX (refused).
    value = atoi(args[-1]) & 0xFFFFFFFF
    if value >= 0xFFFFFFFF:
        raise Invalid("value out of range")
    e.set_quota(domid, name, value)
    return OK

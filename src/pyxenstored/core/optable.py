"""The dispatch table: message type -> (handler, flags), like C's ``wire_funcs``.

Types absent from the table (15 WATCH_EVENT, 16 ERROR, 20 RESTRICT, unknown numbers)
answer ENOSYS. The generic checks (privilege, transaction lookup) run once, in the
engine, from these flags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from ..protocol.wire import Op
from .access import View
from .connection import Connection
from .control import h_control
from .handlers_domain import (
    h_get_domain_path,
    h_get_feature,
    h_introduce,
    h_is_domain_introduced,
    h_release,
    h_resume,
    h_set_feature,
    h_set_target,
)
from .handlers_quota import h_get_quota, h_set_quota
from .handlers_session import (
    h_reset_watches,
    h_transaction_end,
    h_transaction_start,
    h_unwatch,
    h_watch,
)
from .handlers_tree import (
    h_directory,
    h_directory_part,
    h_get_perms,
    h_mkdir,
    h_read,
    h_rm,
    h_set_perms,
    h_write,
)

if TYPE_CHECKING:
    from .engine import Engine
    from .transactions import Transaction

__all__ = ["MUTATES", "NODES", "NOTID", "PRIV", "TABLE", "Handler", "Reply"]

PRIV = 1  #: privileged callers only (EACCES otherwise)
NOTID = 2  #: the tx_id field is ignored
MUTATES = 4  #: changes the store: logged inside a transaction and replayed at commit
NODES = 8  #: looks at nodes: counts against a transaction's transaction-nodes limit

#: What a handler returns: the reply payload, or (WATCH only) the reply and the event
#: that must follow it.
Reply: TypeAlias = "bytes | tuple[bytes, bytes]"
#: A request handler: the engine, the requesting connection, the view it works on (the
#: live tree, or the transaction's), the transaction (None outside one) and the payload;
#: it returns the reply or raises an XenstoreError to refuse.
Handler: TypeAlias = "Callable[[Engine, Connection, View, Transaction | None, bytes], Reply]"

TABLE: dict[int, tuple[Handler, int]] = {
    Op.CONTROL: (h_control, PRIV),
    Op.DIRECTORY: (h_directory, NODES),
    Op.READ: (h_read, NODES),
    Op.GET_PERMS: (h_get_perms, NODES),
    Op.WATCH: (h_watch, NOTID),
    Op.UNWATCH: (h_unwatch, NOTID),
    Op.TRANSACTION_START: (h_transaction_start, 0),
    Op.TRANSACTION_END: (h_transaction_end, 0),
    Op.INTRODUCE: (h_introduce, PRIV),
    Op.RELEASE: (h_release, PRIV),
    Op.GET_DOMAIN_PATH: (h_get_domain_path, 0),
    Op.WRITE: (h_write, MUTATES | NODES),
    Op.MKDIR: (h_mkdir, MUTATES | NODES),
    Op.RM: (h_rm, MUTATES | NODES),
    Op.SET_PERMS: (h_set_perms, MUTATES | NODES),
    Op.IS_DOMAIN_INTRODUCED: (h_is_domain_introduced, PRIV),
    Op.RESUME: (h_resume, PRIV),
    Op.SET_TARGET: (h_set_target, PRIV),
    Op.RESET_WATCHES: (h_reset_watches, 0),
    Op.DIRECTORY_PART: (h_directory_part, NODES),
    Op.GET_FEATURE: (h_get_feature, 0),
    Op.SET_FEATURE: (h_set_feature, PRIV),
    Op.GET_QUOTA: (h_get_quota, PRIV),
    Op.SET_QUOTA: (h_set_quota, PRIV),
}

"""The door through which live configuration sees writes under ``/tool/xenstored/``.

The core does not know what the settings are: the runtime attaches an object satisfying
:class:`ConfigHooks` (``liveconfig.tree.ConfigTree``) to ``Engine.config``. Handlers call
``check_*`` before changing a node under :data:`CONFIG_PREFIX` (in a transaction too, so
a bad value is refused at once) and ``written``/``removed`` after a change reached the
live tree (for a transaction: when its commit is replayed), so a setting changes exactly
when its node does.
"""

from __future__ import annotations

from typing import Protocol

from .caller import Caller

__all__ = ["CONFIG_PREFIX", "CONFIG_ROOTS", "ConfigHooks"]

CONFIG_PREFIX = "/tool/xenstored/"
#: Ancestors of the configuration tree, which cannot be removed while it is attached.
CONFIG_ROOTS = frozenset({"/tool", "/tool/xenstored"})


class ConfigHooks(Protocol):
    def check_write(self, caller: Caller, path: str, value: bytes) -> None:
        """Raise Invalid or PermissionDenied unless ``value`` may be written at ``path``."""

    def check_mkdir(self, caller: Caller, path: str) -> None:
        """Raise unless ``path`` may be created as a directory."""

    def check_rm(self, caller: Caller, path: str) -> bytes | None:
        """Raise unless ``path`` may be removed; for a setting return the default value
        that the node is reset to instead of being removed."""

    def check_set_perms(self, caller: Caller, path: str) -> None:
        """Raise: the permissions of configuration nodes are fixed."""

    def written(self, path: str, value: bytes) -> None:
        """A node under the prefix now holds ``value`` in the live tree."""

    def removed(self, paths: list[str]) -> None:
        """These nodes under the prefix are gone from the live tree."""

    def write(self, rel: str, text: str) -> None:
        """Validate and write ``CONFIG_PREFIX + rel`` as the daemon itself (CONTROL,
        SET_QUOTA): the same checks and effects as a client's WRITE. Raises Invalid."""

    def read(self, rel: str) -> str:
        """The current text of ``CONFIG_PREFIX + rel``. Raises NoEntry."""

"""Path syntax and canonicalisation (xenstore-protocol.md §2).

A path is absolute (``/a/b``), special (``@releaseDomain``, accepted only where the op
allows it) or relative (resolved under the caller's home, ``/local/domain/<domid>``).
Only ``A-Z a-z 0-9 - / _ @`` are legal; no empty component and no trailing ``/``
except for ``/`` itself. The length check counts only what follows
``/local/domain/<N>/`` (N of at most five digits), as C's ``canonicalize`` does.
"""

from __future__ import annotations

import re

from ..errors import Invalid

__all__ = [
    "ancestors",
    "canonicalize",
    "is_canonical",
    "is_special",
    "parent_of",
    "relative_length",
]

# One regex does the character set, empty components and trailing slash at once.
_ABSOLUTE = re.compile(rb"/(?:[A-Za-z0-9_@\-]+/)*[A-Za-z0-9_@\-]+\Z|/\Z")
_SPECIAL = re.compile(rb"@(?:[A-Za-z0-9_@\-]+/)*[A-Za-z0-9_@\-]+\Z|@\Z")
_RELATIVE = re.compile(rb"(?:[A-Za-z0-9_@\-]+/)*[A-Za-z0-9_@\-]+\Z")
_LOCAL = re.compile(r"/local/domain/[0-9]{1,5}/")


def relative_length(path: str) -> int:
    """Length that the path-max quota counts: the part after ``/local/domain/<N>/``."""
    if path.startswith("/local/domain/"):
        m = _LOCAL.match(path)
        if m is not None:
            return len(path) - m.end()
    return len(path)


def canonicalize(raw: bytes, home: str, allow_special: bool, path_max: int) -> str:
    """Return the absolute (or special) form of a path sent by a client.

    Args:
        raw: the path bytes from the payload, without the NUL.
        home: the caller's home, joined in front of relative paths.
        allow_special: whether ``@`` paths are accepted (WATCH, UNWATCH, *_PERMS).
        path_max: the path-max limit; longer relative lengths are refused. A limit of
            0 disables the check.

    Raises:
        Invalid: bad characters, empty or trailing components, too long, or a special
            path where none is allowed.
    """
    first = raw[:1]
    if first == b"/":
        if _ABSOLUTE.match(raw) is None:
            raise Invalid("bad path")
        path = raw.decode("ascii")
    elif first == b"@":
        if not allow_special or _SPECIAL.match(raw) is None:
            raise Invalid("special path not allowed here")
        path = raw.decode("ascii")
    else:
        if _RELATIVE.match(raw) is None:
            raise Invalid("bad relative path")
        path = home + "/" + raw.decode("ascii")
    if path_max and len(path) > path_max and relative_length(path) > path_max:
        raise Invalid("path too long")
    return path


def is_canonical(raw: bytes) -> bool:
    """Whether ``raw`` is a path as the store keeps it: absolute (``/a/b``, ``/``) or
    special (``@name``), with legal characters and no empty component (state restores
    check what they read with this; requests go through :func:`canonicalize`)."""
    return bool(_ABSOLUTE.match(raw) or _SPECIAL.match(raw))


def is_special(path: str) -> bool:
    """True for ``@...`` paths, which live outside the tree."""
    return path[:1] == "@"


def parent_of(path: str) -> str:
    """The parent of an absolute path other than ``/``."""
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else "/"


def ancestors(path: str) -> list[str]:
    """``path`` and all its ancestors, deepest first, ending with ``/``."""
    out = [path]
    while path != "/":
        cut = path.rfind("/")
        path = path[:cut] if cut > 0 else "/"
        out.append(path)
    return out

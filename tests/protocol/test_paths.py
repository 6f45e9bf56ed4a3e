"""Path syntax and canonicalisation (xenstore-protocol.md §2, §12.15; XSA-323, XSA-481).

Boundaries were checked against C xenstored 4.17: a path whose part after
``/local/domain/<N>/`` (N of at most five digits; elsewhere the whole path) is 2048
characters long is accepted, 2049 is EINVAL, for dom0 sockets too.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.errors import Invalid
from pyxenstored.protocol.paths import (
    ancestors,
    canonicalize,
    is_special,
    parent_of,
    relative_length,
)

HOME = "/local/domain/5"
PATH_MAX = 2048


def canon(raw: bytes, special: bool = False, path_max: int = PATH_MAX) -> str:
    return canonicalize(raw, HOME, special, path_max)


def long_rel(n: int) -> str:
    """A relative path of exactly ``n`` characters made of 200-character components."""
    parts: list[str] = []
    length = -1
    while length < n:
        room = n - length - 1
        parts.append("x" * min(200, room))
        length += 1 + len(parts[-1])
    out = "/".join(parts)
    assert len(out) == n
    return out


VALID = [
    (b"/", "/"),
    (b"/a", "/a"),
    (b"/a/b/c", "/a/b/c"),
    (b"/AZaz09-_@", "/AZaz09-_@"),
    (b"/a@b/@/-/_", "/a@b/@/-/_"),
    (b"/local/domain/5", "/local/domain/5"),
    (b"a", "/local/domain/5/a"),
    (b"a/b", "/local/domain/5/a/b"),
    (b"data-1/x_y", "/local/domain/5/data-1/x_y"),
]


@pytest.mark.parametrize(("raw", "path"), VALID)
def test_valid_paths(raw: bytes, path: str) -> None:
    assert canon(raw) == path
    assert canon(raw, special=True) == path


INVALID = [
    b"",
    b"//",
    b"//a",
    b"/a//b",
    b"/a/",
    b"/a/b/",
    b"a/",
    b"a//b",
    b"/a.b",
    b"/.",
    b"/..",
    b"/a b",
    b"/a\tb",
    b"/a:b",
    b"/a+b",
    b"/a~b",
    b"/a\\b",
    b"/\xc3\xa9",
    b"/\x7f",
    b"/local/domain/",  # XSA-481: C 4.22 asserted here; must be a plain EINVAL
    b"/local/domain/5/",
]


@pytest.mark.parametrize("raw", INVALID)
def test_invalid_paths(raw: bytes) -> None:
    with pytest.raises(Invalid):
        canon(raw)
    with pytest.raises(Invalid):
        canon(raw, special=True)


@pytest.mark.parametrize(
    "char",
    sorted(
        set(range(1, 256))
        - set(b"/@-_" + bytes(range(48, 58)) + bytes(range(65, 91)) + bytes(range(97, 123)))
    ),
)
def test_every_other_byte_is_refused(char: int) -> None:
    with pytest.raises(Invalid):
        canon(b"/a" + bytes([char]) + b"b")


@pytest.mark.parametrize("raw", [b"@releaseDomain", b"@introduceDomain", b"@", b"@a/b", b"@a-b_c"])
def test_special_paths_only_where_allowed(raw: bytes) -> None:
    assert canon(raw, special=True) == raw.decode()
    with pytest.raises(Invalid):
        canon(raw, special=False)


@pytest.mark.parametrize("raw", [b"@a//b", b"@a/", b"@a b", b"@a.b"])
def test_special_paths_follow_the_path_syntax(raw: bytes) -> None:
    # C 4.17 accepts any bytes after "@" in WATCH/UNWATCH; 4.22 canonicalises special
    # paths like others, which is what we do.
    with pytest.raises(Invalid):
        canon(raw, special=True)


def test_relative_paths_join_the_callers_home() -> None:
    assert canonicalize(b"x", "/local/domain/0", False, PATH_MAX) == "/local/domain/0/x"
    assert canonicalize(b"x/y", "/local/domain/32752", False, PATH_MAX) == (
        "/local/domain/32752/x/y"
    )


# -- length limit -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prefix", "counted"),
    [
        ("/local/domain/5/", 0),
        ("/local/domain/0/", 0),
        ("/local/domain/12345/", 0),
        ("/local/domain/00005/", 0),
        ("/local/domain/123456/", len("/local/domain/123456/")),  # six digits: no prefix
        ("/local/domainx/5/", len("/local/domainx/5/")),
        ("/", 1),
        ("/vm/", 4),
    ],
)
def test_path_max_counts_only_what_follows_local_domain_n(prefix: str, counted: int) -> None:
    allowed = PATH_MAX - counted
    assert canon((prefix + long_rel(allowed)).encode()) == prefix + long_rel(allowed)
    with pytest.raises(Invalid):
        canon((prefix + long_rel(allowed + 1)).encode())


def test_path_max_for_relative_paths() -> None:
    assert canon(long_rel(2048).encode()) == HOME + "/" + long_rel(2048)
    with pytest.raises(Invalid):
        canon(long_rel(2049).encode())


def test_path_max_for_special_paths() -> None:
    assert canon(b"@" + b"x" * 2047, special=True)
    with pytest.raises(Invalid):
        canon(b"@" + b"x" * 2048, special=True)


def test_path_max_zero_disables_the_check() -> None:
    raw = b"/" + long_rel(5000).encode()
    assert canon(raw, path_max=0) == raw.decode()


def test_a_smaller_path_max() -> None:
    assert canon(b"/" + b"x" * 99, path_max=100)
    with pytest.raises(Invalid):
        canon(b"/" + b"x" * 100, path_max=100)


@pytest.mark.xfail(
    strict=True,
    reason="C 4.17 finds the /local/domain/<N>/ prefix with sscanf('%5u/'), which also "
    "takes a sign: '/local/domain/-1/' is a prefix there (rel. part 2048 -> ENOENT)",
)
def test_signed_domid_prefix_counts_like_c() -> None:
    prefix = "/local/domain/-1/"
    assert canon((prefix + long_rel(2048)).encode()) == prefix + long_rel(2048)


@pytest.mark.parametrize(
    ("path", "length"),
    [
        ("/local/domain/5/abc", 3),
        ("/local/domain/5", len("/local/domain/5")),
        ("/local/domain/123456/a", len("/local/domain/123456/a")),
        ("/a/b", 4),
    ],
)
def test_relative_length(path: str, length: int) -> None:
    assert relative_length(path) == length


# -- helpers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "parent"),
    [("/a", "/"), ("/a/b", "/a"), ("/a/b/c", "/a/b"), ("/local/domain/5", "/local/domain")],
)
def test_parent_of(path: str, parent: str) -> None:
    assert parent_of(path) == parent


def test_ancestors_deepest_first() -> None:
    assert ancestors("/a/b/c") == ["/a/b/c", "/a/b", "/a", "/"]
    assert ancestors("/") == ["/"]


def test_ancestors_of_a_very_deep_path_do_not_recurse() -> None:
    deep = "/a" * 5000
    assert len(ancestors(deep)) == 5001


def test_is_special() -> None:
    assert is_special("@releaseDomain")
    assert not is_special("/a")


component = st.text("abcXYZ019-_@", min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(st.lists(component, min_size=1, max_size=10))
def test_canonical_paths_are_fixed_points(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert canon(path.encode()) == path
    if not parts[0].startswith("@"):  # else it is a special path, not a relative one
        assert canon("/".join(parts).encode()) == HOME + path
    assert parent_of(path) == ("/" + "/".join(parts[:-1]) if len(parts) > 1 else "/")

"""What the verb modules share: the xenstore-utils flags every verb accepts, the
transaction loop of xenstore-utils, buffered output and one-line failures."""

from __future__ import annotations

import argparse
import errno
import os
import random
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from ..client.sync import Client
from ..errors import Again, XenstoreError
from .text import atoi

__all__ = [
    "Fatal",
    "Output",
    "SubParsers",
    "add_socket_flag",
    "parse_modes",
    "reason",
    "run_transaction",
    "warn",
]

if TYPE_CHECKING:
    #: The type of ``register``'s argument (generic only to type checkers).
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    SubParsers = argparse._SubParsersAction


class Fatal(Exception):
    """A failure that ends the verb at once with status 1 (C's ``err``/``errx``); the
    message is printed as is after ``pyxenstore VERB: ``."""


def warn(args: argparse.Namespace, message: str) -> None:
    """One line on stderr, ``pyxenstore VERB: message`` (C's ``warnx``)."""
    print(f"pyxenstore {args.verb}: {message}", file=sys.stderr, flush=True)


def reason(err: XenstoreError) -> str:
    """The error as C's ``err()`` words it: the errno's text (``No such file or
    directory``) for a name the C library maps to an errno, else the name itself."""
    number = getattr(errno, err.name, None)
    return os.strerror(number) if number is not None else err.name


def add_socket_flag(parser: argparse.ArgumentParser) -> None:
    """``-s``/``--socket``: accepted and ignored, as by xenstore-utils since 4.13
    (``xs_open`` picks the socket or the device by itself)."""
    parser.add_argument(
        "-s", "--socket", action="store_true", help="accepted for xenstore-utils; no effect"
    )


class Output:
    """Output held back until the transaction commits (xenstore-utils prints nothing of
    an attempt that is retried), then written to stdout as bytes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def add(self, data: bytes) -> None:
        self.chunks.append(data)

    def flush(self) -> None:
        if self.chunks:
            sys.stdout.flush()
            sys.stdout.buffer.write(b"".join(self.chunks))
            sys.stdout.buffer.flush()
        self.chunks.clear()


def run_transaction(
    args: argparse.Namespace,
    xs: Client,
    use_tx: bool,
    body: Callable[[int, Output], int],
) -> int:
    """xenstore-utils' main loop: run ``body(tx, out)`` (in a transaction when ``use_tx``),
    commit if it returned 0 and abort otherwise, start over with fresh output on EAGAIN
    (forever, as C, with a growing randomised pause), then print the output (also that of
    a failed attempt, as C does) and return ``body``'s status.
    """
    attempt = 0
    while True:
        tx = 0
        if use_tx:
            try:
                tx = xs.transaction_start()
            except XenstoreError as err:
                raise Fatal(f"couldn't start transaction ({reason(err)})") from err
        out = Output()
        status = body(tx, out)
        if use_tx:
            try:
                xs.transaction_end(tx, commit=status == 0)
            except Again:
                if status == 0:
                    time.sleep(min(0.5, 0.001 * 2**attempt) * random.random())
                    attempt += 1
                    continue
                raise Fatal("couldn't end transaction") from None
            except XenstoreError as err:
                raise Fatal(f"couldn't end transaction ({reason(err)})") from err
        out.flush()
        return status


def parse_modes(modes: list[str]) -> list[str]:
    """xenstore-chmod's permission words: a mode letter, then C ``atoi`` of the rest."""
    perms = []
    for word in modes:
        letter = word[:1]
        if letter not in ("n", "r", "w", "b"):
            raise Fatal(f"Invalid permission specification: '{letter}'")
        perms.append(f"{letter}{atoi(word[1:])}")
    return perms

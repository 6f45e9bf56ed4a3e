"""Command lines: argument types, the argument blocks the tools share, and a tool's main."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

DEFAULT_VALUE_SIZE = 32


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# --------------------------------------------------------------------------
# Options of every tool
# --------------------------------------------------------------------------


def add_common_arguments(
    parser: argparse.ArgumentParser, *, with_defaults: bool, socket_required: bool = False
) -> None:
    """``--socket``, ``--json``, ``--daemon-pid``, ``--quiet``.

    xsload.py and rings.py accept them before or after the workload name: the copy on
    each workload's subparser has no defaults (SUPPRESS), so it only overrides what was
    given before the workload name.
    """

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument(
        "--socket", default=default(None), required=socket_required, help="the daemon's Unix socket"
    )
    parser.add_argument(
        "--json", metavar="FILE", default=default(None), help="also write results as JSON to FILE"
    )
    parser.add_argument(
        "--daemon-pid",
        type=int,
        metavar="PID",
        default=default(None),
        help="measure this process's CPU time per request",
    )
    parser.add_argument(
        "--quiet", action="store_true", default=default(False), help="no table on stdout"
    )


def add_fakexen_dir(parser: argparse.ArgumentParser, *, with_defaults: bool = True) -> None:
    parser.add_argument(
        "--fakexen-dir",
        default=None if with_defaults else argparse.SUPPRESS,
        help="the simulated Xen's directory (default: 'fakexen' beside the socket)",
    )


def default_fakexen_dir(args: argparse.Namespace) -> str:
    """``--fakexen-dir``, by default ``fakexen`` beside ``--socket`` (set in ``args``)."""
    if args.fakexen_dir is None:
        args.fakexen_dir = os.path.join(os.path.dirname(os.path.abspath(args.socket)), "fakexen")
    return str(args.fakexen_dir)


def add_value_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--value-size",
        type=int,
        default=DEFAULT_VALUE_SIZE,
        help="bytes per value (default %(default)s)",
    )


# --------------------------------------------------------------------------
# The workloads' argument blocks
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Words:
    """How a transport's workload options name things (its ``--help``) and their defaults."""

    worker: str  # a throughput worker process: "client process"
    pipeline: str  # the help of --pipeline
    idle: str  # an idle peer of the scaling workload: "idle connection"
    idle_counts: list[int]  # the default of --idle
    unit: str  # what the scaling workload measures: "READs"
    per: str  # per what: "per N"
    least: tuple[int, int]  # the defaults of --min-iterations and --warmup
    write: str  # the help of --write


def add_latency_arguments(parser: argparse.ArgumentParser, words: Words) -> None:
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=10000,
        help="measured round trips per operation (default %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1000,
        help="unmeasured round trips first (default %(default)s)",
    )


def add_throughput_arguments(parser: argparse.ArgumentParser, words: Words) -> None:
    parser.add_argument(
        "--clients",
        type=int_list,
        default=[1, 4, 16],
        help=f"comma-separated {words.worker} counts K (default 1,4,16)",
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="measured seconds per K (default %(default)s)"
    )
    parser.add_argument("--pipeline", type=positive_int, default=1, help=words.pipeline)
    parser.add_argument(
        "--read-fraction",
        type=float,
        default=0.5,
        help="share of READs in the mix, the rest are WRITEs (default %(default)s)",
    )


def add_scaling_arguments(parser: argparse.ArgumentParser, words: Words) -> None:
    unit, per = words.unit, words.per
    min_iterations, warmup = words.least
    parser.add_argument(
        "--idle",
        type=int_list,
        default=words.idle_counts,
        help=f"comma-separated {words.idle} counts N "
        f"(default {','.join(map(str, words.idle_counts))})",
    )
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=5000,
        help=f"measured {unit} {per} at most (default %(default)s)",
    )
    parser.add_argument(
        "--min-iterations",
        type=positive_int,
        default=min_iterations,
        help=f"measured {unit} {per} at least (default %(default)s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=5.0,
        help=f"seconds {per} after which measuring stops once "
        "--min-iterations are done (default %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=int, default=warmup, help=f"unmeasured {unit} {per} (default %(default)s)"
    )
    parser.add_argument("--write", action="store_true", help=words.write)


BLOCKS = {
    "latency": add_latency_arguments,
    "throughput": add_throughput_arguments,
    "scaling": add_scaling_arguments,
}

#!/usr/bin/env python3
"""Load generator for any xenstore daemon that serves the Unix-socket protocol.

Talks the raw xenstore wire protocol with the standard library only (``xsbench.wire``),
so it measures C xenstored, oxenstored and pyxenstored alike.  Three workloads::

    python benchmarks/xsload.py --socket PATH latency    [--iterations N]
    python benchmarks/xsload.py --socket PATH throughput [--clients 1,4,16]
                                                         [--seconds S] [--pipeline D]
    python benchmarks/xsload.py --socket PATH idle       [--idle 0,1000,5000]

* ``latency``: sequential 32-byte READ, then WRITE, round trips on one
  connection; median and p99 in microseconds.
* ``throughput``: K client processes, one connection each, closed loop of a
  READ/WRITE mix with D requests in flight per connection; total requests/s.
* ``idle``: N extra connections that each hold a WATCH and stay silent, then
  sequential READ latency from one more connection, for every N, with the
  ratio to N=0.

The workloads are ``xsbench.workloads``' over ``xsbench.sockets.SocketTransport``; rings.py
runs the same ones through simulated guest rings.  ``--daemon-pid PID`` adds the daemon's
CPU time per request, measured from ``/proc/PID`` before and after each measured phase.
``--json FILE`` writes machine-readable results (used by ``compare.py``).  See
benchmarks/README.md.
"""

from __future__ import annotations

import sys
from functools import partial

from xsbench import workloads
from xsbench.sockets import SocketTransport

TRANSPORT = SocketTransport()
WORKLOADS = workloads.bind(TRANSPORT)
build_parser = partial(workloads.build_parser, TRANSPORT)
main = partial(workloads.main, TRANSPORT)

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Ring benchmarks: simulated guest domains talking to a daemon through shared-memory rings.

The daemon must serve the simulated Xen of spec/simulated-xen.md in ``--fakexen-dir``
(default: ``fakexen`` beside ``--socket``): pyxenstored with ``--sim-xen DIR``, or the
reference C xenstored under ``reference/rings.sh``.  The workloads are xsload.py's, written
once in ``xsbench.workloads``, over ``xsbench.guests.RingTransport``::

    python benchmarks/rings.py --socket PATH latency    [--iterations N]
    python benchmarks/rings.py --socket PATH throughput [--clients 1,4,16] [--guests 1]
    python benchmarks/rings.py --socket PATH scaling    [--idle 0,100,1000]

* ``latency``: one guest; sequential 32-byte READ, then WRITE, round trips through its
  ring; median and p99 in microseconds.
* ``throughput``: K guest processes, each with ``--guests`` guests in a closed loop
  (``--pipeline`` requests in flight per ring); total requests/s.
* ``scaling``: one busy guest's sequential READ (and WRITE) latency with N idle
  introduced domains (pages and notify sockets exist, nothing is ever sent; one helper
  process holds them all), with the ratio to the first N.

Domain ids: the busy guest is ``--domid`` (1); the others follow it.  The simulated Xen
says that only domids below ``$FAKEXEN_NDOMS`` (default 100) exist, so start the daemon
with ``FAKEXEN_NDOMS`` above the highest domid used (scaling with 1000 idle domains needs
more than 1001).

Guest behaviour is Linux's xenbus driver's: a kick after every request written, and a
kick after taking responses only when the response ring was full (the daemon may be
waiting for room); ``--kick-on-consume`` kicks after every response read instead, as
the generic contract allows.  A guest waits for the daemon's notification with a
timeout (``--poll``), so a lost notification costs latency, never a hang; such timeouts
are counted (``guest_poll_timeouts``), and so are kicks refused because the daemon's
datagram queue was full (``guest_kicks_refused``; they are retried).

``--daemon-pid PID`` adds the daemon's CPU time per request; ``--json FILE`` writes the
report in xsload's format (``compare.py`` runs these workloads as ``ring-latency``,
``ring-throughput`` and ``ring-scaling``).  See benchmarks/README.md.

This script imports ``pyxenstored.client`` (from ``src/`` when pyxenstored is not
installed) only when a workload runs (``xsbench.guests.import_client``).
"""

from __future__ import annotations

import sys
from functools import partial

from xsbench import workloads
from xsbench.guests import RingTransport

TRANSPORT = RingTransport()
WORKLOADS = workloads.bind(TRANSPORT)
build_parser = partial(workloads.build_parser, TRANSPORT)
main = partial(workloads.main, TRANSPORT)

if __name__ == "__main__":
    sys.exit(main())

"""The benchmarks' shared library: one home for what xsload.py, rings.py, bootstorm.py and
compare.py have in common.

* ``wire``: the xenstore wire protocol and a blocking Unix-socket client (``Connection``).
* ``aio``: the asyncio clients of the bootstorm (``Conn``: a socket or a guest's ring).
* ``measure``: the daemon's CPU time from /proc, timed round trips, percentiles.
* ``report``: metrics, tables, and ``run_and_report`` (the header of every report).
* ``procs``: client worker processes behind barriers, and reaping them.
* ``cli``: argument types and the argument blocks of the workloads.
* ``daemons``: the daemon presets of compare.py and starting and stopping a daemon.
* ``workloads``: latency, throughput and scaling, written once over a ``Transport``.
* ``sockets``: the socket transport (xsload.py).
* ``guests``: simulated guests on rings and the ring transport (rings.py).

Socket benchmarks import nothing from ``pyxenstored``: only ``guests`` refers to it, and
only inside a function that ring mode calls (``import_client``).
"""

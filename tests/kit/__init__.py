"""The one engine test kit: drive a sans-I/O Engine with requests, read its replies and
watch events, and run scenario tables (see tests/README.md).

* :mod:`kit.engine` -- :class:`~kit.engine.Kit` (an Engine, named or handed-out
  connections, requests, replies, events) and :class:`~kit.engine.FakeBackend` (the
  hypervisor every kit engine runs on).
* :mod:`kit.tables` -- scenario tables: rows, ``events()`` rows, :func:`~kit.tables.run_table`.
* :mod:`kit.config` -- :class:`~kit.config.ConfigKit`: a Kit with live configuration
  (``/tool/xenstored/``), alone or wired as a constructed ``Server`` wires it.
"""

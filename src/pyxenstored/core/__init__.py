"""Sans-I/O xenstore semantics. :class:`~pyxenstored.core.engine.Engine` is the only door in."""

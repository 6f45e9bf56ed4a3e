"""pyxenstored: a Xen xenstore daemon with a sans-I/O core and an asyncio runtime."""

__version__ = "0.1.0"

__all__ = ["__version__"]

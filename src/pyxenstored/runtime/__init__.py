"""The asyncio runtime: wires transports to the sans-I/O engine."""

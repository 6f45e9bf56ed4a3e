"""End-to-end tests: the real daemon over real sockets, and real Xen tools."""

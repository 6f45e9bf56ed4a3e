"""The daemon and guest processes of a test (tests/domains' fixture), killed at teardown."""

from domains.test_rings_processes import procs  # noqa: F401 (fixture)

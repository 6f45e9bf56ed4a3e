"""Tests of the daemon as a host runs it: C xenstored's options, detaching, systemd's
readiness protocol, Debian's launch-xenstore."""

"""Tests of the client library (pyxenstored.client)."""

"""Sans-I/O live configuration: the settings registry and its tree under /tool/xenstored."""

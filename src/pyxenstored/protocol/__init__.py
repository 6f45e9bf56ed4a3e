"""Sans-I/O wire protocol: header, op codes, framing, payload rules, paths, permissions."""

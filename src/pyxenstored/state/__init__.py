"""Sans-I/O state transfer: Xen's xenstore state stream (``stream``) and the engine's
state as its records (``snapshot``), for live update and crash-journal snapshots."""

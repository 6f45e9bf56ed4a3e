"""Sans-I/O store: the tree of nodes as a data structure, no permissions or watches."""

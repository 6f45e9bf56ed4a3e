"""``pyxenstore``: the xenstore command line tool (one command, many verbs).

:mod:`.main` builds the parser from the verb modules listed in ``main.COMMANDS``;
:mod:`.connect` opens the connection every verb uses. The tool is a client like any
other: it imports only the client library, the protocol and the errors, never the
daemon, so it works against C xenstored and oxenstored as well.
"""

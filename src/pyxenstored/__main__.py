"""``python -m pyxenstored``: the daemon in the foreground unless asked otherwise.

The installed ``pyxenstored`` command detaches like C xenstored (a drop-in for a host's
``XENSTORED``); this form stays in the foreground, with or without ``-N``, as test
harnesses and conformance runners that start and stop it by its pid expect.
"""

import sys

from .cli import main

sys.exit(main(fork_by_default=False))

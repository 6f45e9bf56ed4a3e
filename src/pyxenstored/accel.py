"""Which compiled accelerators this process may use (issue 10 item 5).

Pure Python is the reference build of everything. A compiled accelerator replaces one
piece where a profile showed that Python cannot reach a target, keeps the pure piece
beside it, and is used only when it was built (``pip install`` builds it where a C
compiler is present) and this process did not ask for pure Python:

* ``PYXENSTORED_PURE=1`` in the environment (read once, when this module is first
  imported) selects pure Python everywhere; ``make test`` runs the store, core and state
  suites a second time so.

The only accelerator so far is the node storage (``store/_nodebase.c``, see
``store/nodebase.py``). This module is outside the sans-I/O layers because it reads the
environment; the layers ask it, and nothing else, whether they may use compiled code.
"""

from __future__ import annotations

import os

__all__ = ["PURE"]

#: True when the environment asks for pure Python (``PYXENSTORED_PURE`` set, not "0").
PURE: bool = os.environ.get("PYXENSTORED_PURE", "") not in ("", "0")

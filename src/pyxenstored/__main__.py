"""``python -m pyxenstored``."""

import sys

from .cli import main

sys.exit(main())

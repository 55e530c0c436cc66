"""``python -m recframe ...`` is the same as ``recframe ...``."""

import sys

from recframe.cli import main

sys.exit(main())

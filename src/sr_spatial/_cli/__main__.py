"""``python -m sr_spatial._cli``: the ``sr-spatial`` command."""

import sys

from sr_spatial._cli import main

sys.exit(main())

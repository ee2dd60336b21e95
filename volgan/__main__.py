"""``python -m volgan``: the ``volgan`` command line (``volgan.apps.cli``)."""

import sys

from volgan.apps.cli import main

sys.exit(main())

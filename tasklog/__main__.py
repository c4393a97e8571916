"""``python -m tasklog``: the same as the ``tasklog`` command."""

import sys

from tasklog.cli import main

sys.exit(main())

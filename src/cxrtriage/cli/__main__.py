"""``python -m cxrtriage.cli``: the same as the ``cxr`` command."""

import sys

from cxrtriage.cli.main import main

sys.exit(main())

"""``python -m arrowdiff`` is the ``arrowdiff`` command."""

import sys

from arrowdiff.cli import main

sys.exit(main())

"""``python -m m2f_med`` runs the ``m2f-med`` command."""

import sys

from m2f_med.cli import main

sys.exit(main())

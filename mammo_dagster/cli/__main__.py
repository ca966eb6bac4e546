"""`python -m mammo_dagster.cli`: the same as the `mammo` console script."""

import sys

from .main import main

sys.exit(main())

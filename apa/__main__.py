"""`python -m apa` = the `apa` command."""

import sys

from apa.cli import main

sys.exit(main())

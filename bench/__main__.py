"""`python -m bench [--quick] [--only …] [--out FILE]`."""

import sys

from .run import main

sys.exit(main())

"""``python -m transpike`` (and ``torchrun -m transpike``) runs the command line."""

import sys

from .cli import main

sys.exit(main())

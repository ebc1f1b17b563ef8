"""``python -m benchmarks`` (``make bench``): see :mod:`benchmarks.cli`."""

import sys

from .cli import main

sys.exit(main())

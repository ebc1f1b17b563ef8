"""``python -m benchmarks`` (``make bench``): see :mod:`benchmarks.cli`."""

import os
import sys

# The harness starts client processes (the disconnect figure's) while grpc's threads run: grpc's fork handlers
# would log a line for each, and nothing of grpc is used in a child before it execs. Set before grpc loads.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from .cli import main

sys.exit(main())

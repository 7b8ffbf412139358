"""``python -m depthaccel``: the same command line as the ``depthaccel`` script."""

import sys

from depthaccel.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m arraycurv``: the reproductions command line (see :mod:`arraycurv.cli`)."""



import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

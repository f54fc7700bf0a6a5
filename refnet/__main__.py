"""``python -m refnet`` is the ``refnet`` command."""
import sys

from .cli import main

if __name__ == "__main__":   # not when a spawned or forkserver worker imports this module
    sys.exit(main())

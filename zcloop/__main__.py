"""``python -m zcloop``: see zcloop/_cli.py."""
import sys

from zcloop._cli import main

if __name__ == "__main__":
    sys.exit(main())

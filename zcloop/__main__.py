"""``python -m zcloop``: see zcloop/_cli.py."""
import sys

from zcloop._cli import main

sys.exit(main())

"""`python -m ai00ref <command>`: see ai00ref/cli.py."""
import sys

from ai00ref.cli import main

sys.exit(main())

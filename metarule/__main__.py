"""`python -m metarule`: the same command line as `metarule`."""
import sys

from metarule.cli import main

sys.exit(main())

"""A plugin module that calls sys.exit when imported: `pytest-wild editors` must still list
every other editor, and this one with its one-line error."""

import sys

sys.exit(3)

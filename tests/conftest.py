"""Shared pytest setup for every suite.

The lab package (lab/) lives beside camex/ at the top of the repository and
is not installed into the venv; make it importable for tests/integration and
tests/lab.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

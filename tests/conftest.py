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


# Measurements recorded by the lab tests (tests/integration/conftest.py's
# `measure` fixture) are listed at the end of the run. This hook sits here,
# in the top conftest, because under pytest-xdist only the controller prints
# the summary and it may not load the integration conftest.
def pytest_terminal_summary(terminalreporter):
    lines = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) != "call":
                continue
            for key, value in getattr(rep, "user_properties", ()):
                if key == "lab-measurement":
                    lines.append(f"{rep.nodeid.split('::', 1)[-1]}: {value}")
    if lines:
        terminalreporter.section("lab measurements")
        for line in sorted(lines):
            terminalreporter.write_line(line)

"""Shared pytest setup for every suite: which tier a test belongs to, what
plain `pytest` runs, and the summary of lab measurements.

The tiers are the folders: tests/unit (in memory, or a private namespace),
tests/integration (the namespace lab, marked `lab`), tests/lab (virtme-ng
VMs, marked `lab` and `vm`). The marks come from the folder, so a lab test
cannot slip into the unit tier by a forgotten `pytestmark`.
"""

import os

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
TIER_MARKS = {
    os.path.join(TESTS, "integration"): ("lab",),
    os.path.join(TESTS, "lab"): ("lab", "vm"),
}
# What `pytest` with neither a path nor -m runs: the unit tier, which needs
# no lab and takes about a minute. The labs take many minutes and VMs boot
# kernels, so a user asks for them (`pytest -m lab`, or a path).
DEFAULT_MARKEXPR = "not lab"


def pytest_configure(config):
    if not config.option.markexpr and config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        config.option.markexpr = DEFAULT_MARKEXPR
        config._camex_default_tier = True


def pytest_report_header(config):
    if getattr(config, "_camex_default_tier", False):
        return ("camex: the unit tier only (-m 'not lab'); `pytest -m lab` runs the namespace "
                "and VM labs, `pytest -m vm` the VM lab, `pytest tests` everything")
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items):
    for item in items:
        path = str(item.path)
        for folder, marks in TIER_MARKS.items():
            if path.startswith(folder + os.sep):
                for mark in marks:
                    item.add_marker(mark)


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

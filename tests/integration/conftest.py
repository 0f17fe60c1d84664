"""Fixtures of the integration tests: a fresh namespace lab per test (real
namespaces, real TUN, real UDP) and a launcher for camex daemons in it.

Namespaces are named after the pytest worker's PID, so `pytest -n 2` is
safe. When a test fails, the last lines of every daemon's log are printed
(pytest shows them under "Captured stdout teardown"); all logs stay in the
test's tmp_path.
"""

import os

import pytest

from lab.daemons import Camex
from lab.faults import ChainTopology
from lab.netns import StarTopology


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _lab(request, tmp_path, topology=StarTopology, **kw):
    if os.geteuid() != 0:
        pytest.fail("the namespace lab needs root (namespaces, TUN)")
    with topology(logdir=str(tmp_path), **kw) as lab:
        yield lab
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            for proc in lab.processes:
                if "camex" in proc.name:
                    print(proc.tail(40))
            print(f"logs in {lab.logdir}")


@pytest.fixture
def star(request, tmp_path):
    """Server namespace + clients C1 (10.250.0.2) and C2 (10.250.1.2)."""
    yield from _lab(request, tmp_path, clients=2)


@pytest.fixture
def star3(request, tmp_path):
    """Like star, plus C3 (10.250.2.2, tunnel 10.0.0.4)."""
    yield from _lab(request, tmp_path, clients=3)


@pytest.fixture
def star4(request, tmp_path):
    """Like star3, plus C4 (10.250.3.2, tunnel 10.0.0.5)."""
    yield from _lab(request, tmp_path, clients=4)


@pytest.fixture
def star6(request, tmp_path):
    """Server + C1 + C2 over an IPv6-only underlay (fd00:250:<i>::/64, no
    IPv4 address on any veth)."""
    yield from _lab(request, tmp_path, clients=2, family="ipv6")


@pytest.fixture
def star46(request, tmp_path):
    """Server + C1 + C2 over a dual-stack underlay."""
    yield from _lab(request, tmp_path, clients=2, family="dual")


@pytest.fixture
def chain(request, tmp_path):
    """Like star, but C1 (192.168.1.2) sits behind a router namespace `mid`
    (lab.faults.ChainTopology)."""
    yield from _lab(request, tmp_path, ChainTopology)


# Issue 2's tests are about the legacy wire protocol (the one an unmodified
# C peer speaks), so the clients pin it; a test that wants the daemon's
# default (v2 when there is a passphrase) sets camex.protocol = None.
@pytest.fixture
def camex(star):
    return Camex(star, protocol="legacy")


@pytest.fixture
def camex3(star3):
    return Camex(star3, protocol="legacy")


@pytest.fixture
def measure(record_property):
    """Record a measurement (e.g. recovery time, Gbit/s) for the summary that
    ends the test run; works under pytest-xdist via user_properties."""

    def record(text: str) -> None:
        print(text)
        record_property("lab-measurement", text)

    return record


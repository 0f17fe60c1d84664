"""The helper child that does the daemon's netlink work (camex.base.child,
camex.io.netlink): answers, errors that reach the caller as one clear
message, a helper that dies or hangs, one that gave up waiting, and the
daemon-side bookkeeping of what the link owns."""

import ipaddress
import os
import signal
import time

import pytest

from camex.base import child
from camex.legacy.client import IfConfig
from camex.io import netlink


def _handler(op, *args):
    if op == "add":
        return sum(args)
    if op == "pid":
        return os.getpid()
    if op == "fail":
        raise ValueError("no such thing: " + args[0])
    if op == "exit":
        os._exit(args[0])
    if op == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if op == "sleep":
        time.sleep(args[0])
        return "slept"
    if op == "fds":
        return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    raise KeyError(op)


@pytest.fixture
def helper():
    h = child.Helper("test", lambda: _handler, timeout=10.0, idle=30.0)
    yield h
    if h.running:
        h.release()


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_answers_several_requests_in_one_child_then_exits(helper):
    assert helper.call("add", 2, 3) == 5
    pid = helper.call("pid")
    assert pid != os.getpid() and helper.call("add", 1) == 1
    assert helper.call("pid") == pid  # the same helper served all of them
    runs = child.STATS["test"]["runs"]
    helper.release()
    assert not helper.running and _gone(pid)
    # What it cost is kept for `camex status`: its peak resident set.
    assert child.STATS["test"]["peak_rss_kib"] > 1000
    assert child.STATS["test"]["runs"] == runs


def test_an_error_in_the_helper_reaches_the_caller_as_its_message(helper):
    with pytest.raises(child.HelperError, match="^no such thing: eth9$"):
        helper.call("fail", "eth9")
    assert helper.call("add", 40, 2) == 42  # and the helper goes on serving


def test_a_setup_that_fails_is_reported_on_the_first_request():
    def setup():
        import camex_no_such_module  # noqa: F401

    h = child.Helper("broken", setup, timeout=10.0)
    try:
        with pytest.raises(child.HelperError, match="ModuleNotFoundError: .*camex_no_such_module"):
            h.call("anything")
    finally:
        h.release()


@pytest.mark.parametrize("op, arg, said", [
    ("exit", 3, "exited with status 3 before it answered"),
    ("kill", None, r"was killed by signal 9 \(SIGKILL\) before it answered"),
])
def test_a_helper_that_dies_is_an_error_and_the_next_call_starts_a_new_one(helper, op, arg, said):
    first = helper.call("pid")
    with pytest.raises(child.HelperError, match="the test helper " + said):
        helper.call(op, *([arg] if arg is not None else []))
    assert not helper.running and _gone(first)
    assert helper.call("pid") not in (first, os.getpid())


def test_a_helper_that_does_not_answer_in_time_is_killed():
    h = child.Helper("slow", lambda: _handler, timeout=0.3)
    pid = None
    try:
        pid = h.call("pid")
        t0 = time.monotonic()
        with pytest.raises(child.HelperError, match="did not answer within 0.3 s"):
            h.call("sleep", 30)
        assert time.monotonic() - t0 < 10
        assert not h.running and _gone(pid)
        assert h.call("add", 1, 1) == 2  # a fresh one
    finally:
        h.release()


def test_a_helper_that_gave_up_waiting_is_replaced_without_an_error():
    h = child.Helper("idle", lambda: _handler, timeout=10.0, idle=0.2)
    try:
        h.start()
        first = h.pid
        runs = child.STATS["idle"]["runs"]
        time.sleep(0.6)  # it exits (IDLE_EXIT) without having read anything
        assert h.call("add", 1, 2) == 3
        assert h.pid != first and child.STATS["idle"]["runs"] == runs + 1
    finally:
        h.release()


def test_the_helper_holds_none_of_the_daemons_descriptors(helper):
    # A TUN or socket of the daemon must close when the daemon closes it:
    # the helper must not keep a copy alive.
    r, w = os.pipe()
    try:
        helper.start()
        os.close(w)
        w = None
        assert os.read(r, 1) == b""  # EOF: nobody else holds the write end
        assert r not in helper.call("fds")
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_run_once_returns_the_result_and_leaves_no_process():
    assert child.run_once("once", lambda a, b: [a, b, os.getpid()], "x", 2)[:2] == ["x", 2]
    with pytest.raises(child.HelperError, match="boom"):
        child.run_once("once", _raise_boom)


def _raise_boom():
    raise RuntimeError("boom")


# ------------------------------------------------- the daemon's LinkConfig


class FakeNetlinkChild:
    """Stands in for camex.io.netlink_ops in the helper: records requests
    and answers like it (the state after, an error half-way)."""

    def __init__(self, error_after_routes=None):
        self.error_after_routes = error_after_routes

    def __call__(self, op, *args):
        if op == "apply":
            (_index, ifname, _mtu, _txq, address, _owned, owned_routes, wanted, gateway,
             _gso_max_size, *_ipv6) = args
            routes = [r for r in owned_routes if r in wanted]
            for net in wanted:
                if net in routes:
                    continue
                if self.error_after_routes is not None and len(routes) >= self.error_after_routes:
                    return {"address": address, "routes": routes, "warnings": [],
                            "error": f"configuring {ifname}: (17, 'File exists') {gateway}"}
                routes.append(net)
            return {"address": address, "routes": routes,
                    "warnings": ["route 10.9.0.0/16 already exists; leaving it as it is"],
                    "error": None}
        if op == "clear":
            return None
        raise KeyError(op)


@pytest.fixture
def fake_netlink(monkeypatch):
    def use(handler):
        h = child.Helper("netlink-test", lambda: handler, timeout=10.0, idle=30.0)
        monkeypatch.setattr(netlink, "_helper", h)
        return h
    yield use
    if netlink._helper.running:
        netlink._helper.release()


def _cfg(routes, gateway="10.0.0.1"):
    return IfConfig(ipaddress.IPv4Interface("10.0.0.2/24"), 1400,
                    ipaddress.IPv4Address(gateway) if gateway else None,
                    [ipaddress.IPv4Network(r) for r in routes])


def test_link_config_keeps_what_the_helper_added_and_lets_it_go(fake_netlink, caplog):
    h = fake_netlink(FakeNetlinkChild())
    link = netlink.LinkConfig("lo")
    assert h.running  # forked at once: pyroute2 imports while the client connects
    with caplog.at_level("WARNING", logger="camex"):
        link.apply(_cfg(["10.8.0.0/16", "10.7.0.0/16"]))
    assert link.address == ipaddress.IPv4Interface("10.0.0.2/24")
    assert link.routes == [ipaddress.IPv4Network("10.8.0.0/16"), ipaddress.IPv4Network("10.7.0.0/16")]
    assert "already exists" in caplog.text
    assert not h.running  # let go right after the set-up
    link.clear()
    assert link.routes == [] and link.address is None and not h.running


def test_link_config_error_half_way_keeps_what_was_added_for_clear(fake_netlink):
    fake_netlink(FakeNetlinkChild(error_after_routes=1))
    link = netlink.LinkConfig("lo")
    with pytest.raises(netlink.NetlinkConfigError, match=r"^configuring lo: \(17, 'File exists'\)"):
        link.apply(_cfg(["10.8.0.0/16", "10.7.0.0/16"]))
    assert link.routes == [ipaddress.IPv4Network("10.8.0.0/16")]


def test_link_config_helper_failure_is_a_netlink_error(fake_netlink):
    fake_netlink(lambda op, *a: os._exit(5))
    link = netlink.LinkConfig("lo")
    with pytest.raises(netlink.NetlinkConfigError,
                       match="the netlink-test helper exited with status 5 before it answered"):
        link.apply(_cfg([]))


def test_link_config_for_a_missing_interface():
    with pytest.raises(netlink.NetlinkConfigError, match="^interface camex-none9 not found$"):
        netlink.LinkConfig("camex-none9")


def test_the_netlink_module_does_not_import_pyroute2():
    import subprocess
    import sys
    code = ("import sys, camex.io.netlink, camex.daemon.client, camex.daemon.server; "
            "print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

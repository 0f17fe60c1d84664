"""Daemon life cycle in the lab: SIGTERM/SIGINT leave no routes, no TUN and
no pid file behind; a restarted server is accepted by the running clients
(recovery time is reported); a restarted client is accepted by the server
at once."""

import os
import signal
import time

import pytest

from lab.daemons import C2_PSK, GLOBAL_PSK, vectors_config
from lab.netns import wait_until

pytestmark = pytest.mark.lab

ROUTES = ["10.251.0.0/24", "192.168.77.0/24"]


def _exit_time(proc, sig, timeout=5.0):
    t0 = time.monotonic()
    proc.signal(sig)
    rc = proc.wait(timeout)
    return rc, time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_client_signal_removes_routes_tun_and_pid_file(camex, star, sig, measure):
    camex.start_server()
    pid_file = camex.pid_file(star.c1)
    c1 = camex.start_client(star.c1, routes=ROUTES, extra=["-P", pid_file])
    dev = camex.tun_dev(c1)
    with open(pid_file) as f:
        assert int(f.read().strip()) == c1.pid
    routes = {(r["dst"], r["dev"]) for r in star.c1.routes()}
    for net in ROUTES + ["10.0.0.0/24"]:
        assert (net, dev) in routes

    rc, took = _exit_time(c1, sig)
    measure(f"client exit after {signal.Signals(sig).name}: {took * 1000:.0f} ms")
    assert rc == 0, c1.tail()
    assert took < 1.0, "clean exit within a second"
    assert not os.path.exists(pid_file)
    assert dev not in star.c1.links()
    left = [r for r in star.c1.routes() if r["dev"] != "eth0"]
    assert left == []
    assert c1.find(r"Traceback") is None, c1.tail()


def test_server_sigterm_removes_pid_file_and_releases_port(camex, star, measure):
    pid_file = camex.pid_file(star.server)
    srv = camex.start_server(extra=["-P", pid_file])
    camex.start_client(star.c1)
    camex.start_client(star.c2)
    star.c1.wait_ping("10.0.0.3", timeout=10)
    with open(pid_file) as f:
        assert int(f.read().strip()) == srv.pid

    rc, took = _exit_time(srv, signal.SIGTERM)
    measure(f"server exit after SIGTERM: {took * 1000:.0f} ms")
    assert rc == 0, srv.tail()
    assert took < 1.0, "clean exit within a second"
    assert not os.path.exists(pid_file)
    assert 7000 not in star.server.bound_ports("udp")
    assert star.c1.ping("10.0.0.3", count=2, interval=0.1, wait=0.5).received == 0


RESTART_CASES = [("manual", False), ("manual", True), ("auto", True)]


@pytest.mark.parametrize("mode,encrypted", RESTART_CASES, ids=["manual-plain", "manual-enc", "auto-enc"])
def test_clients_recover_after_server_restart(camex, star, mode, encrypted, measure):
    auto = mode == "auto"
    config = camex.write_config(vectors_config()) if auto else None
    psk = GLOBAL_PSK if encrypted else None
    srv = camex.start_server(encrypt=encrypted, psk=psk, config=config)
    c1 = camex.start_client(star.c1, auto=auto, encrypt=encrypted, psk=psk)
    c2 = camex.start_client(star.c2, auto=auto, encrypt=encrypted,
                            psk=(C2_PSK if auto else GLOBAL_PSK) if encrypted else None)
    star.c1.wait_ping("10.0.0.3", timeout=10)
    # Traffic before the restart moves the counters on both sides (the
    # legacy client then refused a restarted server's fresh counters).
    assert star.c1.ping("10.0.0.3", count=50, interval=0.01).received == 50

    rc, _ = _exit_time(srv, signal.SIGTERM)
    assert rc == 0
    srv2 = camex.start_server(encrypt=encrypted, psk=psk, config=config)
    t0 = time.monotonic()
    # Recovery: the clients re-register on their own (a legacy client after
    # 20-30 s; camex's sooner). Poll with single pings, generous bound.
    star.c1.wait_ping("10.0.0.3", timeout=60)
    took = time.monotonic() - t0
    star.c2.wait_ping("10.0.0.2", timeout=60)
    both = time.monotonic() - t0
    measure(f"recovered after server restart: C1->C2 in {took:.1f} s, both ways in {both:.1f} s")
    # Both clients are back in the new server's table (its log may
    # rate-limit registration lines, so ask `camex status`).
    wait_until(lambda: sorted(c["address"] for c in camex.status(star.server)["clients"])
               == ["10.0.0.2", "10.0.0.3"], 60, "both clients in the new server's table")
    r = star.c1.ping("10.0.0.3", count=20, interval=0.02)
    assert r.received == 20, r.output + "\n" + srv2.tail() + "\n" + c1.tail() + "\n" + c2.tail()
    assert c1.running() and c2.running() and srv2.running()


@pytest.mark.parametrize("mode", ["manual", "auto"])
def test_restarted_client_is_accepted_at_once(camex, star, mode, measure):
    """A client that comes back from a new source port (same key, same ID or
    address) replaces its old entry at once instead of being shadowed by it."""
    auto = mode == "auto"
    config = camex.write_config(vectors_config()) if auto else None
    camex.start_server(encrypt=True, psk=GLOBAL_PSK, config=config)
    c2_psk = C2_PSK if auto else GLOBAL_PSK
    c1 = camex.start_client(star.c1, auto=auto, encrypt=True, psk=GLOBAL_PSK)
    camex.start_client(star.c2, auto=auto, encrypt=True, psk=c2_psk)
    star.c1.wait_ping("10.0.0.3", timeout=10)

    c1.stop()
    wait_until(lambda: not star.c1.links().keys() - {"lo", "eth0"}, 5, "C1's TUN to go")
    t0 = time.monotonic()
    camex.start_client(star.c1, auto=auto, encrypt=True, psk=GLOBAL_PSK)
    star.c1.wait_ping("10.0.0.3", timeout=10)
    took = time.monotonic() - t0
    measure(f"restarted client passes traffic {took:.2f} s after start")
    wait_until(lambda: sorted(c["address"] for c in camex.status(star.server)["clients"])
               == ["10.0.0.2", "10.0.0.3"], 60, "both clients in the new server's table")


def test_auto_client_sigterm_removes_routes_from_config(camex, star):
    """Routes that came in the server's CONFIG go with the client, too."""
    camex.start_server(config=camex.write_config(vectors_config(c2_psk=None)))
    c1 = camex.start_client(star.c1, auto=True)
    dev = camex.tun_dev(c1)
    assert ("10.251.0.0/24", dev) in {(r["dst"], r["dev"]) for r in star.c1.routes()}
    rc, _ = _exit_time(c1, signal.SIGTERM)
    assert rc == 0, c1.tail()
    assert [r for r in star.c1.routes() if r["dev"] != "eth0"] == []
    assert dev not in star.c1.links()

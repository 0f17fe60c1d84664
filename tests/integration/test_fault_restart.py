"""Restarts and reloads: the tunnel comes back after a server restart and a
client restart, and a server SIGHUP costs no traffic. Each test prints the
time it measured."""

import re
import signal
import threading
import time

import pytest

from lab import faults as F
from lab.daemons import Camex, GLOBAL_PSK, vectors_config

pytestmark = pytest.mark.lab


def _start(lab, cx, encrypt=True, auto=True):
    ctl = F.ctl_path(lab, "srv")
    psk = GLOBAL_PSK if encrypt else None
    extra = ["--control-socket", ctl]
    if auto:  # manual clients get no file: its sections would bind their addresses (v2)
        extra += ["-f", cx.write_config(vectors_config(c2_psk=None))]
    srv_argv = dict(encrypt=encrypt, psk=psk, extra=extra)
    srv = cx.start_server(**srv_argv)
    kw = dict(auto=auto, encrypt=encrypt, psk=psk)
    clients = [cx.start_client(ns, extra=["--control-socket", F.ctl_path(lab, ns.role)], **kw)
               for ns in (lab.c1, lab.c2)]
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    return srv, srv_argv, ctl, clients, kw


@pytest.mark.parametrize("protocol", ["legacy", "v2"])
@pytest.mark.parametrize("auto", [False, True], ids=["manual", "auto"])
def test_server_restart(star, camex, auto, protocol):
    """The new server takes its legacy clients back from the state file
    (they notice nothing; without it they would register again after 5 s
    of unanswered traffic, the C client after 20 s); v2 clients got a
    CLOSE and handshake again."""
    lab = star
    cx = F.legacy(camex) if protocol == "legacy" else Camex(lab, protocol=protocol)
    srv, srv_argv, ctl, clients, _ = _start(lab, cx, auto=auto)
    assert lab.c1.ping("10.0.0.3", count=3, interval=0.1).received == 3
    srv.signal(signal.SIGTERM)
    assert srv.wait(2) == 0
    t0 = time.monotonic()
    srv2 = cx.start_server(**srv_argv)
    up = time.monotonic() - t0
    took = F.time_until_ping(lab.c1, "10.0.0.3", 45, t0)
    print(f"\nserver restart ({protocol}, encrypted, {'auto' if auto else 'manual'}): new server up in "
          f"{up:.2f} s, tunnel traffic again after {took:.1f} s")
    assert took <= 3.0
    assert sorted(c["address"] for c in F.server_clients(ctl)) == ["10.0.0.2", "10.0.0.3"]
    # The clients accept the new server's counter at once (flaw 5): no
    # replay drops (its counters start above the old server's anyway).
    for ns in ("c1", "c2"):
        assert F.status(F.ctl_path(lab, ns))["drops"].get("replay", 0) == 0
    assert lab.c2.ping("10.0.0.2", count=3, interval=0.1).received == 3
    assert srv2.running()


@pytest.mark.parametrize("protocol", ["legacy", "v2"])
@pytest.mark.parametrize("auto", [False, True], ids=["manual", "auto"])
def test_client_restart(star, camex, auto, protocol):
    lab = star
    cx = F.legacy(camex) if protocol == "legacy" else Camex(lab, protocol=protocol)
    srv, _, ctl, (c1, c2), kw = _start(lab, cx, auto=auto)
    routes_before = {r["dst"] for r in lab.c1.routes()}
    t_stop = time.monotonic()
    c1.signal(signal.SIGTERM)
    assert c1.wait(2) == 0
    stop_s = time.monotonic() - t_stop
    assert "tun0" not in lab.c1.links()
    t0 = time.monotonic()
    c1b = cx.start_client(lab.c1, extra=["--control-socket", F.ctl_path(lab, "c1b")], **kw)
    took = F.time_until_ping(lab.c2, "10.0.0.2", 15, t0)
    print(f"\nclient restart ({protocol}, encrypted, {'auto' if auto else 'manual'}): clean exit in "
          f"{stop_s:.2f} s, traffic again {took:.2f} s after the new start")
    assert stop_s < 1.0
    assert {r["dst"] for r in lab.c1.routes()} == routes_before
    assert [c["address"] for c in F.server_clients(ctl)].count("10.0.0.2") == 1
    assert c1b.running()


def test_server_sighup_costs_no_traffic(star, camex):
    """A burst of pings with SIGHUPs in the middle loses no more than the
    same burst without them (the lab shares its CPUs with other work, so
    the baseline is measured, not assumed)."""
    lab, cx = star, F.legacy(camex)
    srv, _, ctl, clients, _ = _start(lab, cx, auto=True)
    before = {c["address"]: c["endpoint"] for c in F.server_clients(ctl)}
    n = 200

    def burst(hups: int):
        result = {}
        t = threading.Thread(target=lambda: result.setdefault(
            "ping", lab.c1.ping("10.0.0.3", count=n, interval=0.01, wait=2)))
        t.start()
        sent = 0
        while sent < hups:
            time.sleep(0.3)
            srv.signal(signal.SIGHUP)
            sent += 1
        t.join()
        return result["ping"]

    base = burst(0)
    mark = srv.mark()
    hup = burst(5)
    srv.wait_for_line(r"configuration reloaded", timeout=5, start=mark)
    reloads = len(re.findall(r"configuration reloaded", srv.output()[mark:]))
    print(f"\nserver SIGHUP: {n} pings at 10 ms: {base.received} answered without SIGHUP "
          f"(rtt max {base.rtt_max_ms} ms), {hup.received} with 5 SIGHUPs ({reloads} reloads "
          f"logged; rtt max {hup.rtt_max_ms} ms)")
    assert reloads == 5
    assert hup.received >= base.received - 2
    assert {c["address"]: c["endpoint"] for c in F.server_clients(ctl)} == before

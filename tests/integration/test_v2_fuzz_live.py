"""Live v2 noise at a running server (camex.testing.fuzzer_v2), from a third
namespace, while C1 moves TCP to C2 through the server's relay (BULK
frames on both legs) and C2 pings C1.

The noise: forged BULK fragments under the clients' real session indexes
(learned by watching C1's link, as anyone on the path could) sent as UDP
GSO bursts, which the server's socket reads as GRO batches - the path a
crafted burst once crashed; mutated and replayed copies of C1's own
datagrams; junk of every v2 type. What a user would see: the server never
stops and logs no internal error, the transfer arrives intact, pings pass,
memory stays bounded, both clients keep their sessions and endpoints.
"""

import random
import threading
import time

import pytest

from camex.io import gso
from camex.testing.fuzzer_v2 import V2Noise
from lab import attacks as A
from lab.daemons import auto_config
from lab.faults import tcp_transfer
from lab.v2lab import GLOBAL, V2Camex

pytestmark = pytest.mark.lab

ATTACKER = "10.250.2.2"
SERVER_ON_ATTACKER_LINK = "10.250.2.1"
SIZE = 64 << 20
RSS_GROWTH_MAX_KIB = 16 * 1024     # reassembly holds at most ~3 MiB


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def test_v2_server_shrugs_off_forged_bursts_and_junk(star3, measure):
    lab = star3
    cx = V2Camex(lab)
    config = cx.write_config(auto_config({"C1": {"local_cidr": "10.0.0.2/24"},
                                          "C2": {"local_cidr": "10.0.0.3/24"}}))
    srv = cx.start_server(encrypt=True, psk=GLOBAL, config=config)
    for ns in (lab.c1, lab.c2):
        cx.wait_client(cx.start_client(ns, wait=False, auto=True, encrypt=True, psk=GLOBAL))
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    before = {a: c["endpoint"] for a, c in cx.clients().items()}

    # Watch C1's link for a moment: its session index and some datagrams
    # (DATA and BULK fragments) to mutate.
    with A.Sniffer(lab.server, "c1", cx.port) as sniff:
        warm = tcp_transfer(lab.c1, lab.c2, "10.0.0.3", 1 << 20, port=5310)
        lab.c1.ping("10.0.0.3", count=3, interval=0.05)
    assert warm["ok"], warm
    mine = [c.payload for c in sniff.packets if c.src == "10.250.0.2" and c.payload[:1] == b"\xc2"]
    receivers = sorted({p[4:8] for p in mine if p[1] in (4, 6)})
    assert receivers and any(p[1] == 6 for p in mine)       # BULK went by
    noise = V2Noise(random.Random(7), receivers)
    noise.seen = mine[-300:]

    rss0, log0 = rss_kib(srv.pid), srv.mark()
    result = {}
    xfer = threading.Thread(target=lambda: result.setdefault(
        "xfer", tcp_transfer(lab.c1, lab.c2, "10.0.0.3", SIZE, port=5311, timeout=120)))
    pings = threading.Thread(target=lambda: result.setdefault(
        "ping", lab.c2.ping("10.0.0.2", count=60, interval=0.05, wait=2)))
    xfer.start()
    pings.start()
    socks = [A.ns_socket(lab.clients[2], bind=(ATTACKER, 0)) for _ in range(4)]
    dst = (SERVER_ON_ATTACKER_LINK, cx.port)
    sent = bursts = errors = 0
    peak = rss0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and (xfer.is_alive() or time.monotonic() - t0 < 3):
        s = socks[sent & 3]
        try:
            if sent % 4 == 0:
                run, size = noise.bulk_burst()
                gso.send_gso(s, run, size, dst)
                bursts += 1
                sent += len(run)
            else:
                s.sendto(noise.datagram(), dst)
                sent += 1
        except OSError:          # a full buffer: the server is busy, let it read
            errors += 1
            time.sleep(0.001)
        if sent % 512 < 4:
            assert srv.running(), srv.tail()
            peak = max(peak, rss_kib(srv.pid))
            time.sleep(0.002)    # leave the relay some of the two cores
    elapsed = time.monotonic() - t0
    xfer.join(130)
    pings.join(30)
    for s in socks:
        s.close()

    assert srv.running(), srv.tail()
    log = srv.output()[log0:]
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
    x, p = result["xfer"], result["ping"]
    assert x["ok"] and x["bytes"] == SIZE, x
    assert p.received >= 0.8 * p.transmitted, p.output
    peak = max(peak, rss_kib(srv.pid))
    assert peak - rss0 <= RSS_GROWTH_MAX_KIB, (rss0, peak)
    after = cx.clients()
    assert {a: c["endpoint"] for a, c in after.items()} == before
    drops = cx.server_drops()
    assert lab.c1.ping("10.0.0.3", count=5, interval=0.1).received == 5
    measure(f"live v2 noise: {sent} datagrams ({bursts} GSO bursts of forged BULK fragments) "
            f"in {elapsed:.1f} s beside a {SIZE >> 20} MiB relay transfer "
            f"({SIZE / x['seconds'] / 1e6 * 8:.0f} Mbit/s, intact); ping "
            f"{p.received}/{p.transmitted}; server VmRSS {rss0} -> peak {peak} KiB; "
            f"{errors} send errors; drops {drops}")

"""Attacks on v2 in the namespace lab: real datagrams captured on
the underlay (AF_PACKET) and sent again - replayed from the client's own
endpoint and from another one, reflected back to their sender, replayed to
a restarted server - plus inner packets with a spoofed source and a wrong
passphrase. What a user sees: the packet does not arrive (a UDP listener
on the other client), the server's status (endpoint, drop counters) and
its log."""

import threading
import time

import pytest

from lab.attacks import Forger, Sniffer
from lab.daemons import auto_config
from lab.netns import wait_until
from lab.v2lab import GLOBAL, PER_CLIENT, WRONG, Marker, V2Camex, data_from

pytestmark = pytest.mark.lab

C1_UNDERLAY, SERVER_C1 = "10.250.0.2", "10.250.0.1"
C2_UNDERLAY, SERVER_C2 = "10.250.1.2", "10.250.1.1"


@pytest.fixture
def cx(star):
    return V2Camex(star)


def up(cx, star, **server_kw):
    """Server (global passphrase) and manual v2 clients C1, C2, pinging."""
    server_kw.setdefault("encrypt", True)
    server_kw.setdefault("psk", GLOBAL)
    srv = cx.start_server(**server_kw)
    c1 = cx.start_client(star.c1, encrypt=True, psk=GLOBAL, extra=["--protocol", "v2"])
    c2 = cx.start_client(star.c2, encrypt=True, psk=GLOBAL, extra=["--protocol", "v2"])
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    return srv, c1, c2


def capture_marker(cx, star, marker, text):
    """Send one marker C1 -> C2 and return the DATA datagrams C1 sent for it
    (as captured where they enter the server)."""
    with Sniffer(star.server, "c1", cx.port) as sniff:
        data = marker.send(text)
        marker.wait_for(data)
        captured = data_from(sniff.packets, C1_UNDERLAY)
    assert captured, "no DATA datagram from C1 captured"
    return data, captured


def test_replayed_data_is_not_delivered_and_does_not_move_the_endpoint(cx, star, measure):
    up(cx, star)
    marker = Marker(star.c1, star.c2)
    port = cx.client_port(star.c1)
    data, captured = capture_marker(cx, star, marker, "replay-me")
    assert marker.count(data) == 1
    before = cx.clients()["10.0.0.2"]
    drops0 = cx.server_drops()

    forger = Forger(star.c1)
    try:
        for d in captured:
            for _ in range(3):
                # From the client's own endpoint ...
                forger.send(C1_UNDERLAY, port, SERVER_C1, cx.port, d)
                # ... and from another port of its host.
                forger.send(C1_UNDERLAY, 40404, SERVER_C1, cx.port, d)
    finally:
        forger.close()
    other = Forger(star.c2)   # and from another client's host
    try:
        for d in captured:
            other.send(C2_UNDERLAY, 40405, SERVER_C2, cx.port, d)
    finally:
        other.close()

    assert marker.count(data, wait=1.0) == 1
    drops = cx.server_drops()
    replays = drops.get("v2-replay", 0) - drops0.get("v2-replay", 0)
    assert replays == 7 * len(captured), drops
    after = cx.clients()["10.0.0.2"]
    assert after["endpoint"] == before["endpoint"] == f"{C1_UNDERLAY}:{port}"
    assert after["rx_packets"] == before["rx_packets"]
    # The tunnel is unharmed.
    data2 = marker.send("after-the-replay")
    marker.wait_for(data2)
    marker.close()
    measure(f"replay: {7 * len(captured)} replayed DATA datagrams, 0 delivered, "
            f"endpoint unchanged")


def test_spoofed_inner_source_is_dropped(cx, star):
    """Identity binding: C1 may send from its address and from the network
    configured behind it (allowed_cidr), nothing else."""
    config = cx.write_config(auto_config({
        "C1": {"local_cidr": "10.0.0.2/24", "allowed_cidr": "10.251.0.0/24"},
        "C2": {"local_cidr": "10.0.0.3/24"}}))
    for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
        star.c2.sysctl(key, "0")   # C2 must accept any source, so that only camex filters
    cx.start_server(encrypt=True, psk=GLOBAL, config=config)
    cx.start_client(star.c1, encrypt=True, psk=GLOBAL, extra=["-n", "C1"])
    cx.start_client(star.c2, encrypt=True, psk=GLOBAL, extra=["-n", "C2"])
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    marker = Marker(star.c1, star.c2)
    inner = Forger(star.c1)   # raw IPv4 into C1's routing: out through its TUN
    try:
        allowed = ["10.0.0.2", "10.251.0.7"]
        spoofed = ["10.0.0.3", "10.0.0.99", "192.168.7.7", "10.251.1.7"]
        for src in allowed + spoofed:
            inner.send(src, 5555, star.c2.tunnel_ip, marker.port, f"from {src}".encode())
    finally:
        inner.close()
    got = marker.collect(wait=1.0)
    for src in allowed:
        assert f"from {src}".encode() in got, got
    for src in spoofed:
        assert f"from {src}".encode() not in got, got
    c1 = cx.clients()["10.0.0.2"]
    assert c1["spoofed"] == len(spoofed)
    assert cx.server_drops().get("v2-spoofed") == len(spoofed)
    marker.close()


def test_reflected_datagrams_are_rejected(cx, star):
    up(cx, star)
    marker = Marker(star.c1, star.c2)
    back = Marker(star.c2, star.c1)
    port = cx.client_port(star.c1)
    # A DATA server -> C1 (captured where it enters C1) and C1 -> server.
    with Sniffer(star.c1, "eth0", cx.port) as sniff:
        d = back.send("to-c1")
        back.wait_for(d)
        to_c1 = data_from(sniff.packets, SERVER_C1, cx.port)
    _, from_c1 = capture_marker(cx, star, marker, "from-c1")
    assert to_c1 and from_c1
    srv_before = cx.clients()["10.0.0.2"]
    drops0 = cx.server_drops()
    c1_before = cx.status(star.c1)

    f1, fs = Forger(star.c1), Forger(star.server)
    try:
        for dgram in to_c1:   # back to the server, from C1's endpoint
            f1.send(C1_UNDERLAY, port, SERVER_C1, cx.port, dgram)
        for dgram in from_c1:   # back to C1, from the server's endpoint
            fs.send(SERVER_C1, cx.port, C1_UNDERLAY, port, dgram)
    finally:
        f1.close()
        fs.close()
    assert back.count(d, wait=0.5) == 1 and marker.collect(0.5).count(b"from-c1") == 1

    drops = cx.server_drops()
    srv_after = cx.clients()["10.0.0.2"]
    rejected = sum(drops.get(k, 0) - drops0.get(k, 0)
                   for k in ("v2-unknown_index", "v2-forged", "v2-stale"))
    assert rejected == len(to_c1), drops
    # Nothing opened: an accepted reflection would count as received (and
    # its inner source, 10.0.0.3, as spoofed).
    assert srv_after["rx_packets"] == srv_before["rx_packets"]
    assert srv_after["spoofed"] == srv_before["spoofed"] == 0
    c1_after = cx.status(star.c1)
    assert c1_after["rx_packets"] == c1_before["rx_packets"]
    marker.close()
    back.close()


def test_stale_session_index_after_restart_is_rejected(cx, star):
    srv, _, _ = up(cx, star)
    marker = Marker(star.c1, star.c2)
    port = cx.client_port(star.c1)
    data, captured = capture_marker(cx, star, marker, "old-session")
    srv, _ = cx.restart_server(srv, encrypt=True, psk=GLOBAL)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=5)
    drops0 = cx.server_drops()
    forger = Forger(star.c1)
    try:
        for d in captured:
            forger.send(C1_UNDERLAY, port, SERVER_C1, cx.port, d)
            forger.send(C1_UNDERLAY, 40406, SERVER_C1, cx.port, d)
    finally:
        forger.close()
    assert marker.count(data, wait=1.0) == 1
    drops = cx.server_drops()
    assert drops.get("v2-unknown_index", 0) - drops0.get("v2-unknown_index", 0) == 2 * len(captured)
    assert cx.clients()["10.0.0.2"]["endpoint"] == f"{C1_UNDERLAY}:{port}"
    marker.close()


def test_wrong_passphrase_is_refused_with_a_log_line(cx, star):
    """A wrong global passphrase, and the global one offered by a client
    whose section has its own: both refused, logged by the server; the
    right ones get in."""
    config = cx.write_config(auto_config({
        "C1": {"local_cidr": "10.0.0.2/24"},
        "C2": {"local_cidr": "10.0.0.3/24", "psk": PER_CLIENT["C2"]}}))
    srv = cx.start_server(encrypt=True, psk=GLOBAL, config=config)
    bad1 = cx.start_client(star.c1, wait=False, auto=True, encrypt=True, psk=WRONG,
                           extra=["--protocol", "v2"])
    srv.wait_for_line(rf"rejected a v2 handshake from {C1_UNDERLAY}:\d+: no key opens it",
                      timeout=10)
    bad1.stop()
    # The line is throttled per kind (one per 10 s, with a count of the
    # suppressed ones), so the second refusal is read from the counters.
    bad0 = cx.server_drops().get("v2-bad_mac1", 0)
    bad2 = cx.start_client(star.c2, wait=False, auto=True, encrypt=True, psk=GLOBAL,
                           extra=["--protocol", "v2"])
    bad2.wait_for_line(r"data path:", timeout=10)
    wait_until(lambda: cx.server_drops().get("v2-bad_mac1", 0) >= bad0 + 4, 10,
               "C2's INITs (own-section and global candidates) failing mac1")
    assert cx.clients() == {}
    assert bad1.find(r"tunnel up") is None and bad2.find(r"tunnel up") is None
    bad2.stop()
    good1 = cx.start_client(star.c1, wait=False, auto=True, encrypt=True, psk=GLOBAL)
    good2 = cx.start_client(star.c2, wait=False, auto=True, encrypt=True, psk=PER_CLIENT["C2"])
    cx.wait_client(good1)
    cx.wait_client(good2)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    assert {c["protocol"] for c in cx.clients().values()} == {"v2"}


def test_handshake_flood_is_answered_with_cookies(cx, star, measure):
    """A captured INIT replayed hundreds of times a second (it passes mac1:
    the load that costs the server most) puts the server under load: it
    answers with 52-byte COOKIEs, does no Diffie-Hellman for them, and a
    real client that starts during the flood still gets in (its next INIT
    carries mac2)."""
    cx.start_server(encrypt=True, psk=GLOBAL)
    with Sniffer(star.server, "c2", cx.port) as sniff:
        cx.start_client(star.c2, encrypt=True, psk=GLOBAL, extra=["--protocol", "v2"])
        wait_until(lambda: any(p.payload[:2] == b"\xc2\x01" for p in sniff.packets), 5,
                   "C2's INIT")
        init = next(p.payload for p in sniff.packets if p.payload[:2] == b"\xc2\x01")

    stop = threading.Event()
    sent = [0]

    def flood():
        f = Forger(star.c2)
        try:
            while not stop.is_set():
                # From C2's host, many source ports: the COOKIEs come back
                # to where the sniffer below sees them.
                f.send(C2_UNDERLAY, 20000 + sent[0] % 20000, SERVER_C2, cx.port, init)
                sent[0] += 1
                time.sleep(0.002)
        finally:
            f.close()

    with Sniffer(star.c2, "eth0", cx.port) as replies:
        t = threading.Thread(target=flood)
        t.start()
        try:
            time.sleep(1.0)   # the server is under load now
            t0 = time.monotonic()
            cx.start_client(star.c1, encrypt=True, psk=GLOBAL, extra=["--protocol", "v2"])
            star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
            took = time.monotonic() - t0
        finally:
            stop.set()
            t.join(5)
        cookies = [p for p in replies.packets if p.payload[:2] == b"\xc2\x03"]
        resps = [p for p in replies.packets
                 if p.payload[:2] == b"\xc2\x02" and p.dport >= 20000]
    assert len(cookies) > sent[0] // 4, (len(cookies), sent[0])
    assert all(len(p.payload) == 52 < len(init) for p in cookies)
    assert resps == []   # no DH answer to any replayed INIT
    assert cx.server_drops().get("v2-init_replay", 0) > 0
    assert {c["protocol"] for c in cx.clients().values()} == {"v2"}
    measure(f"INIT flood: {sent[0]} replayed INITs, {len(cookies)} COOKIE replies "
            f"(52 B each, INIT {len(init)} B), a new client up in {took:.2f} s meanwhile")

"""Floods against a camex server: junk datagrams and REGISTERs from forged
sources. The server must stay up, honest clients keep working, memory stays
bounded, and nothing is amplified: every byte the server sends towards the
attacker's link is counted by nftables in the server's namespace.

Sizes: CAMEX_FLOOD_N junk datagrams (default 100,000; `make flood` runs a
million) and CAMEX_FLOOD_REGISTERS forged REGISTERs (default 30,000).
"""

import os
import random
import threading
import time

import pytest

from lab import attacks as A
from lab import faults as F
from lab.daemons import C2_PSK, Camex, GLOBAL_PSK, vectors_config

pytestmark = pytest.mark.lab

PORT = 7000
ATTACKER = "10.250.2.2"
SERVER_ON_ATTACKER_LINK = "10.250.2.1"
FLOOD_N = int(os.environ.get("CAMEX_FLOOD_N", "100000"))
REGISTERS_N = int(os.environ.get("CAMEX_FLOOD_REGISTERS", "30000"))
RSS_GROWTH_MAX_KIB = 8 * 1024


def _setup(lab, cx, encrypt=True, sniff=False, client_cidrs=()):
    ctl = F.ctl_path(lab, "srv")
    text = vectors_config(c2_psk=C2_PSK if encrypt else None)
    # Tunnel networks besides the lab's 10.0.0.0/24 (a client's address
    # must lie in one: camex.base.addrpolicy).
    extra = "".join(f"client_cidr={n}\n" for n in ("10.0.0.0/24",) + tuple(client_cidrs)
                    if client_cidrs)
    conf = cx.write_config(text.replace("[defaults]\n", "[defaults]\n" + extra, 1))
    srv = cx.start_server(encrypt=encrypt, psk=GLOBAL_PSK if encrypt else None,
                          extra=["--control-socket", ctl, "-f", conf])
    F.nft(lab.server, F.byte_counter_rules("c3"))
    sniffer = A.Sniffer(lab.server, "c1", PORT) if sniff else None
    cx.start_client(lab.c1, auto=True, encrypt=encrypt, psk=GLOBAL_PSK if encrypt else None)
    cx.start_client(lab.c2, auto=True, encrypt=encrypt, psk=C2_PSK if encrypt else None)
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    return srv, ctl, sniffer


class _Pinger:
    """Pings C1 -> C2 through the tunnel for as long as the flood lasts."""

    def __init__(self, lab, seconds):
        self.result = None
        count = max(5, int(seconds / 0.05))
        self.t = threading.Thread(target=lambda: setattr(
            self, "result", lab.c1.ping("10.0.0.3", count=count, interval=0.05, wait=1)))
        self.t.start()

    def join(self):
        self.t.join()
        return self.result


def _sent_to_attacker(lab):
    c = F.nft_counters(lab.server)
    return c["udp_in"], c["udp_out"]


def _forged_flood(lab, rng, n, payload, ping=True):
    """``n`` datagrams, ``payload(i)`` each, from random sources and ports
    of the attacker's subnet to the server, while (``ping``) C1 pings C2.
    Returns (seconds to send, payload bytes sent, the ping during it)."""
    forger = A.Forger(lab.clients[2])
    pinger = _Pinger(lab, seconds=max(2.0, n / 25000)) if ping else None
    t0 = time.monotonic()
    try:
        for i in range(n):
            src = A.random_lab_source(rng, "10.250.2.0/24")
            forger.send(src, rng.randrange(1024, 65536), SERVER_ON_ATTACKER_LINK, PORT,
                        payload(i))
    finally:
        forger.close()
    send_s = time.monotonic() - t0
    return send_s, forger.sent_bytes, pinger.join() if pinger else None


def _server_after(srv, ctl):
    """After a flood: the server still runs; its VmRSS (KiB) and status
    once it had half a second to empty its queue."""
    time.sleep(0.5)
    assert srv.running(), srv.tail()
    return F.vm_rss_kib(srv.pid), F.status(ctl)


def test_junk_flood(star3, camex3):
    lab, cx = star3, F.legacy(camex3)
    srv, ctl, _ = _setup(lab, cx)
    rss0 = F.vm_rss_kib(srv.pid)
    mark = srv.mark()
    socks = [A.ns_socket(lab.clients[2], bind=(ATTACKER, 0)) for _ in range(16)]
    rng = random.Random(1)
    datagrams = list(A.junk(rng, min(FLOOD_N, 20000)))
    pinger = _Pinger(lab, seconds=max(2.0, FLOOD_N / 60000))
    t0 = time.monotonic()
    for i in range(FLOOD_N):
        try:
            socks[i & 15].sendto(datagrams[i % len(datagrams)], (SERVER_ON_ATTACKER_LINK, PORT))
        except OSError:
            pass  # ENOBUFS: the flood outruns the veth; not the server's doing
    send_s = time.monotonic() - t0
    during = pinger.join()
    for s in socks:
        s.close()
    rss1, st = _server_after(srv, ctl)
    seen = sum(st["drops"].values())
    (udp_in, udp_out) = _sent_to_attacker(lab)
    after = lab.c1.ping("10.0.0.3", count=5, interval=0.1)
    log_lines = srv.output()[mark:].count("\n")
    print(f"\njunk flood: {log_lines} log lines during the flood (throttled); {FLOOD_N} datagrams ({udp_in['bytes']} bytes on the wire) in "
          f"{send_s:.1f} s ({FLOOD_N / send_s:.0f}/s); server judged {seen} (rest dropped by "
          f"the socket buffer), drops {st['drops']}; to the attacker: {udp_out['packets']} "
          f"datagrams, {udp_out['bytes']} bytes; ping during the flood "
          f"{during.received}/{during.transmitted}, after 5/{after.received}; "
          f"VmRSS {rss0} -> {rss1} KiB")
    assert log_lines <= 2 + send_s / 10 * 4  # first of each kind, then one per 10 s per kind
    assert udp_in["packets"] >= FLOOD_N * 0.9
    assert udp_out["packets"] == 0 and udp_out["bytes"] == 0
    assert seen > 0
    assert during.received > 0
    assert after.received == 5
    assert rss1 - rss0 <= RSS_GROWTH_MAX_KIB
    assert sorted(c["address"] for c in st["clients"]) == ["10.0.0.2", "10.0.0.3"]


def test_forged_register_flood_encrypted(star3, camex3):
    """REGISTERs that look valid (C1's real REGISTER replayed, REGISTERs
    sealed with a wrong passphrase, well-formed headers with random
    bodies) from thousands of forged sources: no entry, no answer."""
    lab, cx = star3, F.legacy(camex3)
    srv, ctl, sniffer = _setup(lab, cx, sniff=True)
    time.sleep(0.1)
    sniffer.close()
    real = [p.payload for p in sniffer.packets
            if p.src == "10.250.0.2" and A.encrypted_type(p.payload) == 1]
    assert real, "no REGISTER of C1 captured"
    c1_before = F.client_entry(ctl, "10.0.0.2")
    rss0 = F.vm_rss_kib(srv.pid)
    rng = random.Random(2)
    wrong = A.Sealer(b"not-the-passphrase")
    payloads = real + [wrong.seal(1, b"CX2P REGISTER MODE=AUTO CLIENT_ID=C%d\n" % i)
                       for i in range(50)] + list(A.junk(rng, 50, valid_header_share=1.0))
    send_s, sent_bytes, during = _forged_flood(lab, rng, REGISTERS_N,
                                               lambda i: payloads[i % len(payloads)])
    rss1, st = _server_after(srv, ctl)
    udp_in, udp_out = _sent_to_attacker(lab)
    print(f"\nforged REGISTER flood (encrypted): {REGISTERS_N} from random sources in "
          f"10.250.2.0/24 in {send_s:.1f} s, {sent_bytes} payload bytes; drops "
          f"{st['drops']}; answers towards the attacker's link: {udp_out['packets']} "
          f"datagrams, {udp_out['bytes']} bytes; ping during {during.received}/"
          f"{during.transmitted}; VmRSS {rss0} -> {rss1} KiB; clients {len(st['clients'])}")
    assert udp_out["packets"] == 0
    assert sorted(c["address"] for c in st["clients"]) == ["10.0.0.2", "10.0.0.3"]
    assert F.client_entry(ctl, "10.0.0.2")["endpoint"] == c1_before["endpoint"]
    assert st["drops"].get("replay", 0) > 0 and st["drops"].get("auth", 0) > 0
    assert during.received > 0
    assert lab.c1.ping("10.0.0.3", count=5, interval=0.1).received == 5
    assert rss1 - rss0 <= RSS_GROWTH_MAX_KIB


def test_forged_register_flood_plaintext(star3, camex3):
    """Plaintext mode authenticates nothing, so forged manual REGISTERs do
    create entries: each costs bounded memory, gets no answer (no
    amplification), and cannot take an address an honest client holds."""
    lab, cx = star3, F.legacy(camex3)
    # The forged addresses (10.100.0.1 on) inside a tunnel network, so that
    # they make entries: plaintext's weakness is what this measures.
    srv, ctl, _ = _setup(lab, cx, encrypt=False, client_cidrs=("10.100.0.0/16",))
    n = min(REGISTERS_N, 20000)
    rss0 = F.vm_rss_kib(srv.pid)
    rng = random.Random(3)

    def register(i):
        ip = f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256 or 1}"
        return f"CX2P REGISTER MODE=MANUAL LOCAL_IP={ip}\n".encode()

    _, _, during = _forged_flood(lab, rng, n, register)
    rss1, st = _server_after(srv, ctl)
    entries = len(st["clients"]) - 2
    udp_in, udp_out = _sent_to_attacker(lab)
    per_entry = (rss1 - rss0) * 1024 / max(entries, 1)
    print(f"\nforged REGISTER flood (plaintext, manual): {n} sent, {entries} entries made "
          f"(plaintext cannot tell them from clients; they expire after 120 s idle); "
          f"VmRSS {rss0} -> {rss1} KiB = {per_entry:.0f} bytes per entry; answers towards "
          f"the attacker: {udp_out['packets']}; ping during {during.received}/{during.transmitted}")
    assert entries > 0
    assert udp_out["packets"] == 0
    assert per_entry <= 4096
    assert during.received > 0
    assert lab.c1.ping("10.0.0.3", count=5, interval=0.1).received == 5


def test_forged_auto_registers_plaintext_not_amplified(star3, camex3):
    """Forged auto REGISTERs (plaintext: nothing to authenticate) for a
    live client's ID and for an offline client's ID, from thousands of
    forged sources: the live client keeps its entry, and the server sends
    fewer bytes towards the forged sources than it received."""
    lab, cx = star3, F.legacy(camex3)
    ctl = F.ctl_path(lab, "srv")
    conf = cx.write_config(vectors_config(c2_psk=None))
    srv = cx.start_server(extra=["--control-socket", ctl, "-f", conf])
    F.nft(lab.server, F.byte_counter_rules("c3"))
    cx.start_client(lab.c1, auto=True)
    c1_before = F.client_entry(ctl, "10.0.0.2")["endpoint"]
    rng = random.Random(4)
    n = min(REGISTERS_N, 10000)
    _forged_flood(lab, rng, n, ping=False, payload=lambda i:
                  b"CX2P REGISTER MODE=AUTO CLIENT_ID=%s\n" % (b"C1" if i % 2 else b"C2"))
    _, st = _server_after(srv, ctl)
    udp_in, udp_out = _sent_to_attacker(lab)
    print(f"\nforged auto REGISTERs (plaintext): {n} for C1 (live) and C2 (offline): "
          f"{udp_in['bytes']} bytes in, {udp_out['packets']} answers / {udp_out['bytes']} bytes "
          f"out towards the forged sources; C1 {c1_before} -> "
          f"{F.client_entry(ctl, '10.0.0.2')['endpoint']}; drops {st['drops']}")
    assert F.client_entry(ctl, "10.0.0.2")["endpoint"] == c1_before
    assert udp_out["bytes"] < udp_in["bytes"] / 10


def test_forged_v2_handshake_flood(star3):
    """v2: a real INIT (captured off C1's link) replayed from thousands of
    forged sources, plus INIT-shaped junk: no session, no answer larger
    than the request, honest v2 clients keep working, memory bounded."""
    from camex.v2 import wire

    lab = star3
    cx = Camex(lab, protocol="v2")
    ctl = F.ctl_path(lab, "srv")
    srv = cx.start_server(encrypt=True, psk=GLOBAL_PSK, extra=["--control-socket", ctl])
    with A.Sniffer(lab.server, "c1", PORT) as sniff:
        for ns in (lab.c1, lab.c2):
            cx.start_client(ns, encrypt=True, psk=GLOBAL_PSK)
        lab.c1.wait_ping("10.0.0.3", timeout=10)
        time.sleep(0.1)
    inits = [p.payload for p in sniff.packets
             if p.src == "10.250.0.2" and wire.is_v2(p.payload)
             and wire.msg_type(p.payload) == wire.T_INIT]
    assert inits, "no INIT of C1 captured"
    rng = random.Random(5)
    junk = [inits[0][:1] + rng.randbytes(len(inits[0]) - 1) for _ in range(50)]
    payloads = inits + junk
    # Any answer longer than the INIT (IP length) is counted in big_out.
    F.nft(lab.server, F.byte_counter_rules("c3", larger_than=len(inits[0]) + 28))
    rss0 = F.vm_rss_kib(srv.pid)
    _, _, during = _forged_flood(lab, rng, REGISTERS_N, lambda i: payloads[i % len(payloads)])
    rss1, st = _server_after(srv, ctl)
    udp_in, udp_out = _sent_to_attacker(lab)
    bigger = F.nft_counters(lab.server)["big_out"]["packets"]
    print(f"\nforged v2 handshake flood: {REGISTERS_N} INITs ({len(inits[0])} bytes; a real one "
          f"replayed and junk) from forged sources; {udp_out['packets']} answers "
          f"({udp_out['bytes']} bytes, {bigger} longer than an INIT) for {udp_in['bytes']} "
          f"bytes in; "
          f"drops {st['drops']}; ping during {during.received}/{during.transmitted}; "
          f"VmRSS {rss0} -> {rss1} KiB; clients {len(st['clients'])}")
    assert bigger == 0
    assert udp_out["bytes"] <= udp_in["bytes"] / 10
    assert sorted(c["address"] for c in st["clients"]) == ["10.0.0.2", "10.0.0.3"]
    assert during.received > 0
    assert lab.c1.ping("10.0.0.3", count=5, interval=0.1).received == 5
    assert rss1 - rss0 <= RSS_GROWTH_MAX_KIB

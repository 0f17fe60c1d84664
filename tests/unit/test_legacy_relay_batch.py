"""LegacyServer.relay_batch (the server daemon's recvmmsg path) against
datagram_received one by one: a random mix of honest, replayed, forged,
spoofed, misrouted and roaming datagrams leaves two identical servers in
the same state, with the same datagrams sent in the same order."""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest

from camex.legacy import codec
from camex.legacy.seqfloor import SeqFloor
from camex.legacy.server import LegacyServer
from camex.tunnel.server import ServerMux

PSK = b"relay-batch-secret"
KEY = codec.derive_key(PSK)
SERVER_IP = "10.0.0.1"       # the server TUN's address: never a client's
AEAD = codec.new_aead(KEY)


def counting_rng():
    c = itertools.count(1)
    return lambda n: next(c).to_bytes(n, "big")


def server(local_delivery: bool) -> LegacyServer:
    return LegacyServer(encrypt=True, global_key=KEY, rng=counting_rng(),
                        local_delivery=local_delivery,
                        server_interfaces=[ipaddress.IPv4Interface(SERVER_IP + "/24")],
                        seq_floor=SeqFloor(clock=lambda: 10**9))


def ip4(src: str, dst: str, size: int = 60, version: int = 4) -> bytes:
    return (bytes([version << 4 | 5, 0]) + size.to_bytes(2, "big") + bytes(8)
            + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + bytes(size - 20))


class Camera:
    def __init__(self, i: int):
        self.ip = f"10.0.0.{i + 2}"
        self.addr = ("192.0.2.7", 40000 + i)
        self.prefix = bytes([0xCA, 0, 0, i])
        self.seq = 1000

    def seal(self, ptype: int, payload: bytes) -> bytes:
        self.seq += 1
        return codec.seal(AEAD, ptype, self.prefix, self.seq, payload)


def stream(seed: int):
    """(datagram, source address) pairs: registrations, then a random mix."""
    rng = random.Random(seed)
    cams = [Camera(i) for i in range(5)]
    out = [(c.seal(codec.T_REGISTER, codec.register_manual(c.ip)), c.addr) for c in cams]
    sent: list = []
    held: list = []
    for _ in range(600):
        c = rng.choice(cams)
        k = rng.random()
        dst = rng.choice(cams).ip
        if held and rng.random() < 0.1:
            out.append(held.pop(0))                                     # reordered
            sent.append(out[-1])
        if k < 0.08:
            held.append((c.seal(codec.T_DATA, ip4(c.ip, dst)), c.addr))
            continue
        if k < 0.55:
            d = c.seal(codec.T_DATA, ip4(c.ip, dst, rng.choice((20, 60, 1200))))
        elif k < 0.60:
            d = c.seal(codec.T_DATA, ip4(c.ip, rng.choice((SERVER_IP, "10.0.0.99"))))
        elif k < 0.65:
            d = c.seal(codec.T_DATA, ip4(rng.choice(cams).ip, dst))    # spoofed source
        elif k < 0.68:
            d = c.seal(codec.T_DATA, ip4(c.ip, dst, version=6))
        elif k < 0.71:
            d = c.seal(codec.T_DATA, ip4(c.ip, dst)[:12])               # too short
        elif k < 0.78 and sent:
            d, addr = rng.choice(sent)                                  # replay
            out.append((d, addr))
            continue
        elif k < 0.82:
            d = bytearray(c.seal(codec.T_DATA, ip4(c.ip, dst)))
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)           # forged
            d = bytes(d)
        elif k < 0.85:
            c.seq -= 100                                                # far behind
            d = c.seal(codec.T_DATA, ip4(c.ip, dst))
            c.seq += 100
        elif k < 0.88:
            d = c.seal(codec.T_REGISTER, codec.register_manual(c.ip))
        elif k < 0.91:
            c.addr = (c.addr[0], c.addr[1] + 1000)                      # NAT moved
            d = c.seal(codec.T_DATA, ip4(c.ip, dst))
        elif k < 0.94:
            d = rng.randbytes(rng.randrange(1, 80))                     # junk
        elif k < 0.97:
            d = codec.seal(AEAD, codec.T_DATA, b"\x99" + c.prefix[1:], c.seq,
                           ip4(c.ip, dst))                              # unknown prefix
        else:
            d = c.seal(codec.T_DATA, ip4(c.ip, dst))
            out.append((d, ("198.51.100.9", 9)))                        # stranger
            continue
        out.append((d, c.addr))
        sent.append((d, c.addr))
    return out


def state(s: LegacyServer):
    peers = sorted((p.endpoint, p.ip, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes,
                    p.tx_seq, p.last_rx, p.rx_prefix, p.rx_window.top, p.rx_window.bitmap)
                   for p in s.by_endpoint.values())
    return {"peers": peers, "drops": dict(s.drops), "to_tun": [bytes(p) for p in s.to_tun]}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("local_delivery", [False, True])
def test_batches_give_what_one_by_one_gives(seed, local_delivery):
    one, many = server(local_delivery), server(local_delivery)
    pairs = stream(seed)
    now = 50.0
    for d, addr in pairs:
        one.datagram_received(d, addr, now)
    rng = random.Random(seed)
    left = []

    def other(d, addr, size, t):
        assert type(d) is bytes and size == 0
        left.append(d)
        many.datagram_received(d, addr, t)

    i = 0
    while i < len(pairs):
        n = rng.randrange(1, 65)
        many.relay_batch([(memoryview(d), a, 0) for d, a in pairs[i:i + n]], now, other)
        i += n
    assert [(bytes(d), a) for d, a in many.outbox] == [(bytes(d), a) for d, a in one.outbox]
    assert state(many) == state(one)
    # The mix exercised both paths and every kind of refusal.
    relayed = sum(1 for d, _ in one.outbox)
    assert relayed > 150 and len(left) > 50
    assert {"replay", "auth", "spoofed-source", "not-ipv4", "unknown-endpoint"} <= set(
        one.drops)


def test_a_fault_in_one_datagram_costs_that_datagram_only(monkeypatch, caplog):
    s = server(False)
    cams = [Camera(i) for i in range(3)]
    for c in cams:
        s.datagram_received(c.seal(codec.T_REGISTER, codec.register_manual(c.ip)), c.addr, 1.0)
    victim = s.by_endpoint[cams[1].addr]
    victim.rx_window = "not a window"      # any internal error on this one
    items = [(memoryview(c.seal(codec.T_DATA, ip4(c.ip, cams[(i + 1) % 3].ip))), c.addr, 0)
             for i, c in enumerate(cams)]
    s.relay_batch(items, 2.0, lambda *a: pytest.fail("nothing is left for the slow path"))
    assert [a for _, a in s.outbox] == [cams[1].addr, cams[0].addr]
    assert "internal error" in caplog.text


def test_mux_hands_v2_and_plaintext_over_in_order_as_bytes():
    mux = ServerMux(passphrase=PSK, encrypt=True, v2=False)
    seen = []
    v2ish = b"\xc2\x01" + bytes(60)
    mux.datagrams_received([(memoryview(v2ish), ("192.0.2.1", 1), 0),
                            (memoryview(b"junk"), ("192.0.2.2", 2), 0)], 1.0,
                           lambda d, a, size, now: seen.append((type(d), d, a, size, now)))
    assert seen == [(bytes, v2ish, ("192.0.2.1", 1), 0, 1.0),
                    (bytes, b"junk", ("192.0.2.2", 2), 0, 1.0)]


def test_the_mux_deadline_is_the_earlier_of_its_two_protocols():
    """The loop sleeps until ServerMux.next_deadline(): the legacy sweep or
    the v2 server's next timer, whichever comes first, with either alone."""
    mux = ServerMux(passphrase=b"deadline-passphrase", encrypt=True)
    v2_t = mux.v2.next_deadline()
    mux.legacy._next_sweep = 5.0
    assert mux.next_deadline() == min(5.0, v2_t) == 5.0
    mux.legacy._next_sweep = float("inf")
    assert mux.next_deadline() == v2_t
    legacy_only = ServerMux(passphrase=b"deadline-passphrase", encrypt=True, v2=False)
    legacy_only.legacy._next_sweep = 7.0
    assert legacy_only.next_deadline() == 7.0
    v2_only = ServerMux(passphrase=b"deadline-passphrase", encrypt=True, legacy=False)
    assert v2_only.next_deadline() == v2_only.v2.next_deadline()

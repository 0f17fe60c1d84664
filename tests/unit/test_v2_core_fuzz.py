"""The v2 cores under a stream of malformed, forged and replayed datagrams.

A server (the mux that also speaks legacy) and two v2 clients that take
BULK, wired in memory. Between genuine traffic, a seeded generator feeds
the server - one datagram at a time and as GRO batches (`many`) - and the
clients with: the genuine datagrams of the run mutated (bits flipped, cut,
lengthened, header fields rewritten), replayed, or sent from other
addresses; BULK fragments under a session's real receiver index with any
counter, index, count and slice (reassembly state is what they could
grow); DATA, INIT and junk of every v2 type. What a user would see: no
exception ever, bounded reassembly, nothing but the genuine packets on
any TUN, and the tunnel working as before once the noise stops.
"""

import random

import pytest

from camex.v2 import wire
from camex.v2.server import FRAME_SLOTS, FRAME_SLOTS_PER_SESSION

from test_v2_bulk import A1, A2, World, frame, tcp_super, v2
from camex.v2.memlab import ipv4

SPOOFED = [("192.0.2.66", 4066), ("198.51.100.9", 53), A1, A2]


class Noise:
    """Malformed and forged v2 datagrams, from `seen` (genuine ones)."""

    def __init__(self, rng: random.Random, receivers):
        self.rng = rng
        self.receivers = receivers       # real session indexes, 4 bytes LE each
        self.seen: list = []

    def mutated(self) -> bytes:
        r = self.rng
        d = bytearray(r.choice(self.seen))
        how = r.randrange(6)
        if how == 0:
            for _ in range(r.randint(1, 4)):
                d[r.randrange(len(d))] ^= 1 << r.randrange(8)
        elif how == 1:
            d = d[:r.randrange(len(d))]
        elif how == 2:
            d += r.randbytes(r.randint(1, 300))
        elif how == 3 and len(d) >= 20:                  # a header field rewritten
            at = r.choice((1, 2, 3, 8, 12, 15, 16, 17, 19))
            d[at] = r.randrange(256)
        elif how == 4:
            return bytes(r.choice(self.seen))            # a plain replay
        else:
            d[r.randrange(len(d))] = r.randrange(256)
        return bytes(d)

    def bulk(self) -> bytes:
        """A BULK fragment under a real receiver index: fresh counters reach
        reassembly, which is what they could fill."""
        r = self.rng
        count = r.choice((1, 2, 3, 46, 64, 65, 0, 255))
        index = r.randrange(max(count, 1) + 2)
        counter = r.choice((r.randrange(1 << 16), r.randrange(1 << 64), 0, (1 << 64) - 1))
        flags = r.choice((0, 0, wire.FLAG_CLOSE, wire.FLAG_REKEY, 0xFF))
        head = bytes((wire.MARK, wire.T_BULK, flags, index & 0xFF)) + r.choice(self.receivers) \
            + counter.to_bytes(8, "little") + bytes((count, 0, 0, 0))
        if r.random() < 0.1:
            head = head[:17] + r.randbytes(3)           # reserved bytes set
        return head + r.randbytes(r.choice((0, 1, 17, 1388, r.randrange(2000))))

    def typed(self) -> bytes:
        r = self.rng
        t = r.choice((wire.T_INIT, wire.T_RESP, wire.T_COOKIE, wire.T_DATA, wire.T_BULK,
                      wire.T_NOSESSION, 0, 7, 255))
        body = r.choice(self.receivers) if r.random() < 0.5 else r.randbytes(4)
        return bytes((wire.MARK, t, r.randrange(256), r.randrange(256))) + body + \
            r.randbytes(r.choice((0, 4, 8, 12, 24, 100, 1400)))

    def datagram(self) -> bytes:
        pick = self.rng.random()
        if pick < 0.45 and self.seen:
            return self.mutated()
        if pick < 0.75:
            return self.bulk()
        if pick < 0.95:
            return self.typed()
        return self.rng.randbytes(self.rng.randrange(1, 200))


def _bounded(w):
    frames = w.server.server.frames
    assert len(frames.slots) <= FRAME_SLOTS
    assert not frames.groups or max(frames.groups.values()) <= FRAME_SLOTS_PER_SESSION
    assert frames.memory() <= FRAME_SLOTS * 64 * 1472


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noise_never_breaks_the_tunnel_nor_reaches_a_tun(seed):
    rng = random.Random(seed)
    w = World(mux=True)
    c1 = w.add(A1, v2("C1"))
    c2 = w.add(A2, v2("C2"))
    assert c1.bulk_ready and c2.bulk_ready
    receivers = [p.current.local_index.to_bytes(4, "little")
                 for p in w.server.server.peers.values()] + \
        [c.session.current.local_index.to_bytes(4, "little") for c in (c1, c2)]
    noise = Noise(rng, receivers)
    sent_to_c2, sent_to_c1 = [], []

    def genuine(i):
        """Genuine traffic both ways: lone packets and a BULK frame."""
        p = ipv4("10.0.0.2", "10.0.0.3", b"lone %d" % i)
        c1.tun_packet(p, w.now)
        sent_to_c2.append(p)
        q = ipv4("10.0.0.3", "10.0.0.2", b"back %d" % i)
        c2.tun_packet(q, w.now)
        sent_to_c1.append(q)
        hp = tcp_super("10.0.0.2", "10.0.0.3", rng.choice((3000, 30000, 60000)), seq=i + 1)
        f = frame(c1, hp)
        noise.seen.extend(f[:3] + f[-1:])
        sent_to_c2.append(bytes(hp[1]))
        c1.to_net.extend(f)
        noise.seen.extend(c1.to_net[:2] + c2.to_net[:2])
        w.pump()
        noise.seen[:] = noise.seen[-200:]

    for i in range(40):
        genuine(i)
        for _ in range(150):
            d = noise.datagram()
            where = rng.random()
            if where < 0.6:
                w.entry.datagram_received(d, rng.choice(SPOOFED), w.now)
            elif where < 0.8:
                batch = [noise.datagram() for _ in range(rng.randint(2, 50))]
                if rng.random() < 0.5 and noise.seen:
                    batch[rng.randrange(len(batch))] = rng.choice(noise.seen)
                w.entry.datagram_received.many(batch, rng.choice(SPOOFED), w.now)
            else:
                rng.choice((c1, c2)).datagram_received(d, w.now)
        _bounded(w)
        # What the server answered the noise with goes nowhere.
        w.entry.outbox[:] = [(d, a) for d, a in w.entry.outbox if a in (A1, A2)]
        w.now += 0.05
    genuine(99)

    def tun(c):
        return [bytes(x[1]) if type(x) is tuple else bytes(x) for x in c.to_tun]
    assert tun(c2) == sent_to_c2 and tun(c1) == sent_to_c1
    assert c1.established and c2.established
    assert w.server.to_tun == [] and w.mux.legacy.by_endpoint == {}
    st = w.server.server.stats
    assert st["forged"] + st["replay"] + st["malformed"] + st["unknown_index"] > 1000

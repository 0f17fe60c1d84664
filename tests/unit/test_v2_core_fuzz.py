"""The v2 cores under a stream of malformed, forged and replayed datagrams.

A server (the mux that also speaks legacy) and two v2 clients that take
BULK, wired in memory. Between genuine traffic, a seeded generator feeds
the server - one datagram at a time and as GRO batches (`many`) - and the
clients with (camex.testing.fuzzer_v2): the genuine datagrams of the run mutated (bits flipped, cut,
lengthened, header fields rewritten), replayed, or sent from other
addresses; BULK fragments under a session's real receiver index with any
counter, index, count and slice (reassembly state is what they could
grow); DATA, INIT and junk of every v2 type. What a user would see: no
exception ever, bounded reassembly, nothing but the genuine packets on
any TUN, and the tunnel working as before once the noise stops.
"""

import random

import pytest

from camex.base.contract import SuperPacket
from camex.testing.fuzzer_v2 import V2Noise
from camex.v2 import framing
from camex.testing.memlab import ipv4
from camex.v2.server import FRAME_SLOTS, FRAME_SLOTS_PER_SESSION
from tests.support.v2_bulk_world import A1, A2, World, frame, tcp_super, v2

SPOOFED = [("192.0.2.66", 4066), ("198.51.100.9", 53), A1, A2]


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
    noise = V2Noise(rng, receivers)
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
            elif where < 0.7:
                batch = [noise.datagram() for _ in range(rng.randint(2, 50))]
                if rng.random() < 0.5 and noise.seen:
                    batch[rng.randrange(len(batch))] = rng.choice(noise.seen)
                w.entry.datagram_received.many(batch, rng.choice(SPOOFED), w.now)
            elif where < 0.8:   # a forged GSO burst, as one GRO batch
                # (as camex.io.udp.receive: offered uncut, else split)
                burst, size = noise.bulk_burst()
                data, src = b"".join(burst), rng.choice(SPOOFED)
                if not w.entry.datagram_received.whole(data, size, src, w.now):
                    w.entry.datagram_received.many(framing.split(data, size), src, w.now)
            else:
                rng.choice((c1, c2)).datagram_received(d, w.now)
        _bounded(w)
        # What the server answered the noise with goes nowhere.
        w.entry.outbox[:] = [(d, a) for d, a in w.entry.outbox if a in (A1, A2)]
        w.now += 0.05
    genuine(99)

    def tun(c):
        return [bytes(x[1]) if type(x) is SuperPacket else bytes(x) for x in c.to_tun]
    assert tun(c2) == sent_to_c2 and tun(c1) == sent_to_c1
    assert c1.established and c2.established
    assert w.server.to_tun == [] and w.mux.legacy.by_endpoint == {}
    st = w.server.server.stats
    assert st["forged"] + st["replay"] + st["malformed"] + st["unknown_index"] > 1000

"""Malformed and forged camex v2 datagrams for fuzzing (library, no sockets).

    noise = V2Noise(random.Random(1), receivers=[index_bytes, ...])
    noise.seen.extend(captured_v2_datagrams)
    sock.sendto(noise.datagram(), server)
    gso.send_gso(sock, *noise.bulk_burst())      # one GRO batch at the server

What it makes:
  mutated    a genuine datagram of `seen` with bits flipped, cut,
             lengthened or a header field rewritten, or replayed as it is
  bulk       a BULK fragment under a real receiver index (`receivers`,
             4 bytes little-endian each) with any counter, index, count,
             flags and slice: fresh counters reach reassembly, which is the
             state such fragments could grow
  typed      every v2 type (and some that are none), with a real or a
             random receiver index and bodies of telling lengths
  random     bytes
  bulk_burst equal-sized forged fragments for one UDP GSO send, which a
             server with UDP GRO reads as one batch: counts above 64,
             index runs, a short or tiny last datagram

No Scapy and no keys: everything here must fail authentication or shape
checks; what a fuzz run checks is that it does so quietly, in bounded
memory, without disturbing the genuine traffic.
"""

from __future__ import annotations

import random

from camex.v2 import wire


class V2Noise:
    def __init__(self, rng: random.Random, receivers):
        self.rng = rng
        self.receivers = list(receivers)
        self.seen: list = []

    def _receiver(self) -> bytes:
        r = self.rng
        return r.choice(self.receivers) if self.receivers and r.random() < 0.8 \
            else r.randbytes(4)

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
            d[r.choice((1, 2, 3, 8, 12, 15, 16, 17, 19))] = r.randrange(256)
        elif how == 4:
            return bytes(r.choice(self.seen))            # a plain replay
        else:
            d[r.randrange(len(d))] = r.randrange(256)
        return bytes(d)

    def _bulk_header(self, index: int, count: int, counter: int, flags: int,
                     receiver: bytes) -> bytes:
        head = bytes((wire.MARK, wire.T_BULK, flags, index & 0xFF)) + receiver \
            + counter.to_bytes(8, "little") + bytes((count & 0xFF, 0, 0, 0))
        if self.rng.random() < 0.05:
            head = head[:17] + self.rng.randbytes(3)     # reserved bytes set
        return head

    def _counter(self) -> int:
        r = self.rng
        return r.choice((r.randrange(1 << 16), r.randrange(1 << 64), 0, (1 << 64) - 1))

    def bulk(self) -> bytes:
        r = self.rng
        count = r.choice((1, 2, 3, 46, 64, 65, 0, 255))
        return self._bulk_header(r.randrange(max(count, 1) + 2), count, self._counter(),
                                 r.choice((0, 0, wire.FLAG_CLOSE, wire.FLAG_REKEY, 0xFF)),
                                 self._receiver()) + \
            r.randbytes(r.choice((0, 1, 17, 1388, r.randrange(2000))))

    def typed(self) -> bytes:
        r = self.rng
        t = r.choice((wire.T_INIT, wire.T_RESP, wire.T_COOKIE, wire.T_DATA, wire.T_BULK,
                      wire.T_NOSESSION, 0, 7, 255))
        return bytes((wire.MARK, t, r.randrange(256), r.randrange(256))) + self._receiver() + \
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

    def bulk_burst(self, size: int = 1408):
        """(datagrams, segment size) for one GSO send: forged fragments of
        one frame, `size` bytes each, the last one shorter (down to 1 byte)."""
        r = self.rng
        n = r.randint(3, 64)
        count = r.choice((n, n + 1, 64, 65, 200, 255, 3))
        counter, flags, receiver = self._counter(), r.choice((0, 0, 0, 0xFF)), self._receiver()
        order = list(range(n)) if r.random() < 0.7 else [r.randrange(256) for _ in range(n)]
        out = [self._bulk_header(i, count, counter, flags, receiver) + r.randbytes(size - 20)
               for i in order]
        if r.random() < 0.5:
            out[-1] = out[-1][:r.choice((1, 2, 3, 4, 19, 20, 21, size // 2))]
        return out, size

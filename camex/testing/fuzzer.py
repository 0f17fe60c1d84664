"""Malformed camex traffic for fuzzing a live server (library, no sockets).

    fz = DatagramFuzzer(seed=1, passphrase=b"demo-global-secret")
    for category, datagram in fz.datagrams(100_000):
        sock.sendto(datagram, server)

Categories (each a generator of UDP payloads):
  scapy-encrypted   Scapy's fuzz() of CX2PEncrypted / CX2PSealed* (random
                    header fields, lengths, bodies): fails shape or AEAD
  scapy-control     fuzz() of plaintext control lines (random verbs, params)
  scapy-inner       fuzz() of a bare inner IP packet (plaintext DATA shape)
  random            random bytes, 0..1500
  mutated           a valid datagram sealed with the passphrase, then bit
                    flips, cuts, extensions, header edits (length, type,
                    nonce counter): every one must fail authentication
  auth-control      (with a passphrase) authentic datagrams carrying broken
                    control text: unknown verbs, bad or huge values, CONFIG
                    sent to the server, NULs, no newline, 1023+ bytes
  auth-data         (with a passphrase) authentic DATA with fuzzed or cut
                    inner packets, random sequence numbers and prefixes
                    (exercises the replay window and the relay path)

Authentic datagrams never name an honest client: their REGISTERs and inner
source addresses avoid `protected_ips` / `protected_ids`, so a fuzz run can
check that the honest clients keep working without the fuzzer legitimately
taking their place (which anyone with the key may do).

Scapy's fuzz() is slow (~ms per packet), so a pool of generated datagrams is
built once and then replayed with cheap byte mutations: fast enough to send
a million datagrams.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Iterator

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import fuzz

from camex.legacy import codec
from camex.proto.crypto import LegacyKey
from camex.proto.legacy import (SEALED_CLASSES, CX2PConfig, CX2PControl,
                                CX2PEncrypted, CX2PParam, CX2PRegister,
                                CX2PSealed)

BASE_CATEGORIES = ("scapy-encrypted", "scapy-control", "scapy-inner", "random", "mutated")
AUTH_CATEGORIES = ("auth-control", "auth-data")


class DatagramFuzzer:
    def __init__(self, seed: int = 0, passphrase: bytes | str | None = None,
                 pool_size: int = 3000,
                 protected_ips=("10.0.0.1", "10.0.0.2", "10.0.0.3"),
                 protected_ids=("C1", "C2"),
                 tunnel_net: str = "10.0.0.0/24", prefixes: int | None = 1024):
        self.rng = random.Random(seed)
        # Authentic datagrams come from `prefixes` senders (None: a new random
        # prefix every time). Each sender counts up like an honest one, so
        # the server's replay window accepts them and the content is judged;
        # a bounded number of senders keeps the server's per-sender state
        # (replay windows) bounded too, so memory growth means a leak.
        self._senders = [self.rng.randbytes(4) for _ in range(prefixes)] if prefixes else None
        self._next_seq: dict[bytes, int] = {}
        self.key = LegacyKey.from_passphrase(passphrase) if passphrase else None
        self.protected_ips = {ipaddress.IPv4Address(a) for a in protected_ips}
        self.protected_ids = {i.lower() for i in protected_ids}
        self.tunnel_net = ipaddress.IPv4Network(tunnel_net)
        self.categories = BASE_CATEGORIES + (AUTH_CATEGORIES if self.key else ())
        self.pool: list[tuple[str, bytes]] = []
        self._plain: dict[int, tuple[int, bytes]] = {}  # pool index -> (type, plaintext)
        self._orig: dict[int, bytes] = {}  # pool index -> valid datagram it mutates
        self._state = random.getstate()
        try:
            # Scapy's fuzz() draws from the global random module: seed it for
            # reproducible pools, and give the caller's state back afterwards.
            random.seed(seed)
            while len(self.pool) < pool_size:
                cat = self.categories[len(self.pool) % len(self.categories)]
                self.pool.append((cat, getattr(self, "_gen_" + cat.replace("-", "_"))()))
        finally:
            random.setstate(self._state)

    # -- helpers

    def _free_ip(self) -> str:
        while True:
            if self.rng.random() < 0.7:
                ip = self.tunnel_net[self.rng.randrange(self.tunnel_net.num_addresses)]
            else:
                ip = ipaddress.IPv4Address(self.rng.getrandbits(32))
            if ip not in self.protected_ips:
                return str(ip)

    def _free_id(self) -> str:
        while True:
            alphabet = "ABCXYZ019._:-"
            cid = "".join(self.rng.choice(alphabet) for _ in range(self.rng.randrange(1, 40)))
            if cid.lower() not in self.protected_ids:
                return cid

    def _seal(self, ptype: int, plaintext: bytes, prefix: bytes | None = None,
              seq: int | None = None) -> bytes:
        if prefix is None and self._senders is not None:
            prefix = self.rng.choice(self._senders)
            if seq is None:
                # mostly the next number, sometimes a jump (slides the window)
                step = 1 if self.rng.random() < 0.9 else self.rng.choice([2, 64, 1000, 2**32])
                seq = min(self._next_seq.get(prefix, -1) + step, 2**64 - 1)
                self._next_seq[prefix] = seq
        prefix = prefix if prefix is not None else self.rng.randbytes(4)
        seq = seq if seq is not None else self.rng.choice(
            [0, 1, self.rng.getrandbits(8), self.rng.getrandbits(32), self.rng.getrandbits(64),
             2**64 - 1])
        return codec.seal(self.key.aead, ptype, prefix, seq, plaintext[:codec.MAX_PLAINTEXT])

    def _inner(self) -> bytes:
        src, dst = self._free_ip(), self._free_ip()
        if self.rng.random() < 0.1:
            dst = "10.0.0.2"  # through the relay to an honest client (junk it drops)
        l4 = self.rng.choice([ICMP(), UDP(), TCP()])
        pkt = fuzz(IP(src=src, dst=dst) / l4 / self.rng.randbytes(self.rng.randrange(0, 64)))
        raw = bytes(pkt)
        # keep the fuzzed header from putting an honest source back in
        if ipaddress.IPv4Address(raw[12:16]) in self.protected_ips:
            raw = raw[:12] + ipaddress.IPv4Address(src).packed + raw[16:]
        if self.rng.random() < 0.2:
            raw = raw[:self.rng.randrange(0, len(raw) + 1)]
        return raw

    # -- generators (one per category)

    def _gen_scapy_encrypted(self) -> bytes:
        cls = self.rng.choice(list(SEALED_CLASSES.values()) + [CX2PSealed])
        pkt = fuzz(CX2PEncrypted() / cls())
        if self.rng.random() < 0.5:
            pkt.magic = codec.MAGIC  # past the magic check, into the length and AEAD checks
        if self.rng.random() < 0.5:
            pkt.nonce_seq = None     # a consistent nonce counter
        raw = bytes(pkt)
        if self.rng.random() < 0.5 and len(raw) >= codec.OVERHEAD_ENC:
            raw = raw[:17] + struct.pack("!H", len(raw) - codec.OVERHEAD_ENC) + raw[19:]
        return raw

    def _gen_scapy_control(self) -> bytes:
        cls = self.rng.choice([CX2PRegister, CX2PConfig])
        params = [fuzz(CX2PParam()) for _ in range(self.rng.randrange(0, 6))]
        pkt = CX2PControl() / cls(params=params)
        if self.rng.random() < 0.5:
            pkt = fuzz(pkt)
        return bytes(pkt)[:2000]

    def _gen_scapy_inner(self) -> bytes:
        return self._inner()

    def _gen_random(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 1500))

    def _gen_mutated(self) -> bytes:
        if self.key is not None:
            base = self._seal(self.rng.choice([1, 2, 3]), self._control_text() if
                              self.rng.random() < 0.3 else self._inner())
        else:
            base = codec.pack_header(2, self.rng.randbytes(4), self.rng.getrandbits(64), 20) + \
                self.rng.randbytes(36)
        self._orig[len(self.pool)] = base
        return self.mutate(base, force=True)

    def _control_text(self) -> bytes:
        r = self.rng
        choice = r.randrange(10)
        if choice == 0:
            return codec.register_auto(self._free_id()[:31]) if r.random() < 0.5 else \
                b"CX2P REGISTER MODE=AUTO CLIENT_ID=" + self._free_id().encode() * 3 + b"\n"
        if choice == 1:
            return b"CX2P REGISTER MODE=MANUAL LOCAL_IP=" + r.choice(
                [b"999.1.1.1", b"10.0.0", b"", b"0.0.0.0", b"255.255.255.255", b"::1",
                 self._free_ip().encode()]) + b"\n"
        if choice == 2:
            return b"CX2P REGISTER " + r.choice([b"", b"10.0.0.", b"MODE=", b"MODE=X",
                                                 self._free_ip().encode()]) + b"\n"
        if choice == 3:  # a CONFIG sent to the server
            return codec.config_message(self._free_id()[:31], r.choice([0, 1500, 99999]),
                                        self._free_ip() + "/24", self._free_ip())
        if choice == 4:
            return b"CX2P " + r.randbytes(r.randrange(0, 60)) + b"\n"
        if choice == 5:
            return b"CX2P REGISTER MODE=AUTO CLIENT_ID=" + b"A" * r.randrange(30, 1100) + b"\n"
        if choice == 6:
            return b"CX2P REGISTER MODE=AUTO\0CLIENT_ID=" + self._free_id().encode()
        if choice == 7:
            return b"CX2P " + b" ".join(b"K%d=%s" % (i, self._free_ip().encode())
                                        for i in range(r.randrange(1, 80))) + b"\n"
        if choice == 8:
            return r.choice([b"", b"CX2P", b"CX2P ", b"CX2P \n", b"\n", b"CX2P REGISTER\n\n"])
        return b"CX2P " + r.choice([b"HELLO", b"DATA", b"config", b"REGISTER REGISTER"]) + b"\n"

    def _gen_auth_control(self) -> bytes:
        text = self._control_text()
        ptype = self.rng.choice([codec.T_REGISTER, codec.T_REGISTER, codec.T_CONFIG,
                                 codec.T_DATA])
        self._plain[len(self.pool)] = (ptype, text)
        return self._seal(ptype, text)

    def _gen_auth_data(self) -> bytes:
        inner = self._inner() if self.rng.random() < 0.8 else self.rng.randbytes(
            self.rng.randrange(0, 300))
        self._plain[len(self.pool)] = (codec.T_DATA, inner)
        return self._seal(codec.T_DATA, inner)

    # -- mutation

    def mutate(self, data: bytes, force: bool = False) -> bytes:
        """A few random edits; with `force` the result always differs."""
        r = self.rng
        buf = bytearray(data)
        for _ in range(r.randrange(1, 4)):
            op = r.randrange(7)
            if op == 0 and buf:
                buf[r.randrange(len(buf))] ^= 1 << r.randrange(8)
            elif op == 1 and buf:
                del buf[r.randrange(len(buf)):]
            elif op == 2:
                buf += r.randbytes(r.randrange(1, 40))
            elif op == 3 and len(buf) >= codec.HEADER_LEN:  # length field
                struct.pack_into("!H", buf, 17, r.choice([0, 1, 0xFFFF, len(buf) - 42,
                                                           len(buf) - 44, r.getrandbits(16)]) & 0xFFFF)
            elif op == 4 and len(buf) >= 5:  # type
                buf[4] = r.choice([0, 1, 2, 3, 4, 0x20, 0xFF])
            elif op == 5 and len(buf) >= codec.HEADER_LEN:  # seq without the nonce
                struct.pack_into("!Q", buf, 19, r.getrandbits(64))
            elif buf:
                pos = r.randrange(len(buf))
                buf[pos:pos] = buf[pos:pos + r.randrange(1, 30)]
        out = bytes(buf)
        if force and out == data:
            out = data + b"\0"
        return out

    # -- stream

    def datagrams(self, n: int, mutate_share: float = 0.3) -> Iterator[tuple[str, bytes]]:
        """`n` (category, datagram) pairs: pool entries, a share mutated anew.

        Authentic datagrams are sealed afresh each time (next sequence number
        of one of the senders), so the server judges their content instead
        of dropping a replay; mutating them would only break the tag.
        """
        r = self.rng
        pool = self.pool
        for _ in range(n):
            i = r.randrange(len(pool))
            cat, data = pool[i]
            if cat in AUTH_CATEGORIES:
                data = self._seal(*self._plain[i])
            elif r.random() < mutate_share:
                again = self.mutate(data)
                # a second edit can undo the first: never send the valid original
                if again != self._orig.get(i):
                    data = again
            yield cat, data

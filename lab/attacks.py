"""Attack traffic for the lab: datagrams an adversary on the path can build.

Everything here runs in the test process but opens its sockets inside a lab
namespace (`ns_socket`), so forged traffic never leaves the lab. Datagrams
are built with camex.legacy.codec, i.e. byte for byte what a legacy peer
sends; `Forger` sends them with any source address and port (raw IPv4
socket with a header of our own), `Sniffer` records what a link receives
(lab.capture's AF_PACKET tap), so that a test can replay a real client's datagrams.

Used by tests/integration/test_attack_*.py and lab/loadgen.py.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
import threading
import time
from typing import Callable, NamedTuple, Optional

from camex.legacy import codec

from .capture import ETH_P_IP, LinkTap, parse_udp
from .proc import in_ns


# ------------------------------------------------------------ namespaces


def ns_socket(ns, family=socket.AF_INET, type=socket.SOCK_DGRAM, proto=0,
              bind: Optional[tuple] = None) -> socket.socket:
    """A socket that lives in lab namespace ``ns`` (a lab.netns.Namespace)."""

    def make():
        s = socket.socket(family, type, proto)
        if bind is not None:
            s.bind(bind)
        return s

    return in_ns(ns.name, make)


# ------------------------------------------------------------ IPv4 bytes


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0,
         df: bool = False, ttl: int = 64) -> bytes:
    """An IPv4 packet (20-byte header, valid checksum) around ``payload``."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF,
                      0x4000 if df else 0, ttl, proto, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]
    return hdr + payload


def udp_packet(src: str, sport: int, dst: str, dport: int, payload: bytes,
               ident: int = 0) -> bytes:
    """IPv4 + UDP with a correct UDP checksum."""
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    c = inet_checksum(pseudo + hdr + payload) or 0xFFFF
    hdr = struct.pack("!HHHH", sport, dport, length, c)
    return ipv4(src, dst, 17, hdr + payload, ident)


def icmp_echo_message(ident: int, seq: int, data: bytes) -> bytes:
    """An ICMP echo request (no IP header: what a raw ICMP socket sends)."""
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]


def icmp_echo(src: str, dst: str, ident: int = 0x4341, seq: int = 1,
              data: bytes = b"camex-attack") -> bytes:
    return ipv4(src, dst, 1, icmp_echo_message(ident, seq, data), ident=seq)


# ------------------------------------------------------ legacy datagrams


class Sealer:
    """Encrypts legacy datagrams under one passphrase, like a legacy sender
    with one sender prefix and a counter from 0. Thousands of senders of one
    passphrase (lab.loadgen) pass one ``aead`` to share (2 KiB or so each)."""

    def __init__(self, passphrase: bytes, prefix: Optional[bytes] = None, aead=None):
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self.aead = aead or ChaCha20Poly1305(codec.derive_key(passphrase))
        self.prefix = prefix if prefix is not None else os.urandom(4)
        self.seq = 0

    def seal(self, ptype: int, payload: bytes) -> bytes:
        out = codec.seal(self.aead, ptype, self.prefix, self.seq, payload)
        self.seq += 1
        return out

    def open(self, datagram: bytes) -> tuple[int, bytes]:
        hdr = codec.parse_header(datagram)
        return hdr.type, codec.open_datagram(self.aead, datagram, hdr)


def junk(rng: random.Random, n: int, valid_header_share: float = 0.5):
    """``n`` junk datagrams: random bytes, and (share) datagrams with a
    well-formed encrypted header (magic, type, consistent length) but a
    random body, which cost the server an AEAD attempt per key."""
    for _ in range(n):
        if rng.random() < valid_header_share:
            length = rng.randrange(0, 200)
            hdr = codec.pack_header(rng.choice((1, 2, 3)), rng.randbytes(4),
                                    rng.getrandbits(64), length)
            yield hdr + rng.randbytes(length + codec.TAG_LEN)
        else:
            yield rng.randbytes(rng.randrange(1, 1400))


# ------------------------------------------------------------- sending


class Forger:
    """Sends UDP datagrams with any source address and port from namespace
    ``ns`` (raw socket, IP_HDRINCL): spoofed endpoints within the lab."""

    def __init__(self, ns):
        self.sock = ns_socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sent = 0
        self.sent_bytes = 0

    def send(self, src: str, sport: int, dst: str, dport: int, payload: bytes) -> None:
        pkt = udp_packet(src, sport, dst, dport, payload, ident=self.sent)
        while True:
            try:
                self.sock.sendto(pkt, (dst, 0))
                break
            except (BlockingIOError, OSError) as e:
                if getattr(e, "errno", None) not in (11, 105):  # EAGAIN, ENOBUFS
                    raise
                time.sleep(0.0005)
        self.sent += 1
        self.sent_bytes += len(payload)

    def close(self) -> None:
        self.sock.close()


class Captured(NamedTuple):
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


class Sniffer:
    """Records the UDP datagrams that link ``ifname`` of ``ns`` receives
    (an ETH_P_IP tap: on the server's end of a client's veth, what that
    client sends) in a background thread, like tcpdump would."""

    def __init__(self, ns, ifname: str, port: Optional[int] = None):
        self.port = port
        self.packets: list[Captured] = []
        self._lock = threading.Lock()
        self._tap = LinkTap(ns, ifname, self._on_packet, ethertype=ETH_P_IP, cooked=True)

    def _on_packet(self, pkt: bytes) -> None:
        u = parse_udp(pkt)
        if u is None or (self.port and self.port not in (u[1], u[3])):
            return
        with self._lock:
            self.packets.append(Captured(*u))

    def matching(self, pred: Callable[[Captured], bool]) -> list[Captured]:
        with self._lock:
            return [p for p in self.packets if pred(p)]

    def close(self) -> None:
        self._tap.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def encrypted_type(payload: bytes) -> Optional[int]:
    try:
        return codec.parse_header(payload).type
    except codec.CodecError:
        return None


def random_lab_source(rng: random.Random, net: str) -> str:
    """A random host address of ``net`` (for spoofed sources)."""
    n = ipaddress.IPv4Network(net)
    return str(n.network_address + rng.randrange(2, n.num_addresses - 1))


# ---------------------------------------------------------- v2 handshakes


def v2_claim(ns, server: tuple, passphrase: bytes, cidr: str, client_id: str = "",
             timeout: float = 3.0):
    """One v2 handshake from a plain UDP socket in ``ns``, asking the server
    at ``server`` (ip, port) for the tunnel address ``cidr`` (manual mode),
    with camex's own I/O-free client session. Returns the server's
    refusal (a camex.v2.events.Refused: code, message), "granted" if it
    answered with a session, or None if it did not answer in ``timeout``.
    A granted session is closed again at once (its address goes free)."""
    from camex.v2 import kdf, wire
    from camex.v2.client import ClientSession
    from camex.v2.events import Refused, Send, Up

    request = wire.Request(local_cidr=ipaddress.IPv4Interface(cidr))
    session = ClientSession(kdf.client_candidates(passphrase, client_id or None),
                            client_id, request)
    sock = ns_socket(ns, bind=("0.0.0.0", 0))
    sock.settimeout(0.1)
    try:
        for ev in session.start(time.monotonic()):
            sock.sendto(ev.data, server)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65535)
            except socket.timeout:
                continue
            events = session.receive(data, time.monotonic())
            for ev in events:
                if isinstance(ev, Send):
                    sock.sendto(ev.data, server)
            for ev in events:
                if isinstance(ev, Refused):
                    return ev
                if isinstance(ev, Up):
                    for d in session.close(time.monotonic()):
                        sock.sendto(d.data if isinstance(d, Send) else d, server)
                    return "granted"
        return None
    finally:
        sock.close()


def drain(sock, wait: float = 0.3) -> list:
    """Everything a non-blocking socket receives within ``wait`` seconds."""
    out = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            time.sleep(0.02)
    return out

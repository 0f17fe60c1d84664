"""A small capture made with camex's own code, for the package tests.

Two legacy datagrams between a client and a server on port 7000, encrypted
with a passphrase: the client's REGISTER and the server's CONFIG. Written
as a raw-IP pcap by camex.dissect.capture.PcapWriter, so camex-dissect (from the
installed package) has something real to authenticate and decrypt.
"""

from __future__ import annotations

import struct
from pathlib import Path

from camex.dissect import capture
from camex.legacy import codec

PASSPHRASE = b"package-test-secret"
CLIENT = ("192.0.2.10", 40000)
SERVER = ("192.0.2.1", 7000)


def _ip_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """IPv4 + UDP headers around payload (UDP checksum 0: none, as IPv4 allows)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                       bytes(map(int, src[0].split("."))), bytes(map(int, dst[0].split("."))))
    words = struct.unpack("!10H", head)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    head = head[:10] + struct.pack("!H", ~total & 0xFFFF) + head[12:]
    return head + udp


def write(path: Path) -> Path:
    aead = codec.new_aead(codec.derive_key(PASSPHRASE))
    register = codec.seal(aead, codec.T_REGISTER, b"\x01\x02\x03\x04", 1,
                          codec.register_manual("10.0.0.2"))
    config = codec.seal(aead, codec.T_CONFIG, b"\x0a\x0b\x0c\x0d", 1,
                        codec.config_message("10.0.0.2", 1429, "10.0.0.2/24", "10.0.0.1"))
    with capture.PcapWriter(path) as pcap:
        pcap.write(1_700_000_000.0, _ip_udp(CLIENT, SERVER, register))
        pcap.write(1_700_000_000.5, _ip_udp(SERVER, CLIENT, config))
    return path

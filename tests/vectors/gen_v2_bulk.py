"""Regenerate tests/vectors/v2_bulk.json (a development tool, not a test).

    .venv/bin/python tests/vectors/gen_v2_bulk.py

BULK frames (docs/PROTOCOL.md §4.7) and the TLV_FEATURES handshake item
(§4.6), built here straight from the spec with struct and `cryptography`,
WITHOUT camex.v2.wire: the daemon's codec (tests/unit/test_v2_bulk_vectors.py)
and the Scapy layer (camex/proto, the proto helper's tests) are both checked
against these bytes. Deterministic: fixed key, fixed packets. The layout of
the JSON is described in its "fields" entry; tests/unit/test_v2_bulk_vectors.py
fails if this script's output and the committed JSON drift apart.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

OUT = Path(__file__).resolve().parent / "v2_bulk.json"
KEY = bytes(range(0x40, 0x60))    # a session's direction key (32 bytes)
RECEIVER = 0x8856E6E3
HDR = struct.Struct("<BBBBIQBBH")  # C2 06 flags index | receiver | counter | count 0 | 0 0

FIELDS = {
    "key": "hex, the ChaCha20-Poly1305 key of the direction (as a CAMEX_V2 key-log line gives it)",
    "keylog": "the same key as a key-log line: CAMEX_V2 <receiver index, 8 hex digits> <key>",
    "frames[]": "one BULK frame each; every field below is per frame",
    "frames[].name": "short name",
    "frames[].receiver": "receiver index (u32, the value; little-endian on the wire)",
    "frames[].counter": "AEAD nonce counter of the frame (u64; nonce = 4 zero bytes || u64le)",
    "frames[].flags": "header byte 2 (0x01 CLOSE, 0x02 REKEY, as DATA)",
    "frames[].count": "number of fragments n (header byte 16)",
    "frames[].datagram_size": "S: every fragment but the last is exactly S bytes (20 header + S-20 slice)",
    "frames[].records[]": "the plaintext's records: {gso_size: G, packet: hex}; G 0 = complete packet",
    "frames[].plaintext": "hex, records as u16be L | u16be G | packet, concatenated",
    "frames[].ad": "hex, the 20-byte header with index byte (3) = 0: the associated data",
    "frames[].ciphertext": "hex, AEAD output over the plaintext: ciphertext || 16-byte tag",
    "frames[].fragments[]": "hex, the UDP payloads in index order: header (byte 3 = index) || slice",
    "malformed[]": "{name, bytes (hex), why}: fragments a parser must refuse (parse_bulk -> None)",
    "tampered[]": "{name, frame, fragments[] (hex), opens: false}: parse fine, reassemble by index, "
                  "AD from any fragment with byte 3 = 0, and the AEAD open FAILS",
    "tlv[]": "{name, message (INIT or RESP payload, decrypted), bytes (hex), features}: TLV_FEATURES "
             "= type 7, length 1, u8 bitmask; bit 0 (0x01) = accepts BULK",
}


def csum16(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ipv4(src: str, dst: str, proto: int, l4: bytes, ident: int = 1) -> bytearray:
    total = 20 + len(l4)
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, 64, proto, 0,
                              bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))))
    c = 0xFFFF - csum16(bytes(h))
    h[10:12] = struct.pack("!H", c)
    return h + l4


def pseudo_partial(ip: bytes, proto: int, l4len: int) -> int:
    """What a TSO TUN read leaves in the L4 checksum field (virtio
    NEEDS_CSUM): the folded pseudo-header sum, not complemented."""
    return csum16(ip[12:20] + struct.pack("!HH", proto, l4len))


def tcp_super(payload_len: int) -> bytes:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(payload_len))
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, 1000, 77, 5 << 4, 0x18, 502, 0, 0))
    p = ipv4("10.0.0.2", "10.0.0.3", 6, bytes(tcp) + payload, ident=0x1234)
    p[36:38] = struct.pack("!H", pseudo_partial(p, 6, len(p) - 20))
    return bytes(p)


def udp_super(datagrams: int, size: int) -> bytes:
    payload = bytes((i * 13 + 1) & 0xFF for i in range(datagrams * size))
    udp = bytearray(struct.pack("!HHHH", 5000, 6000, 8 + len(payload), 0))
    p = ipv4("10.0.0.3", "10.0.0.2", 17, bytes(udp) + payload, ident=0x99)
    p[26:28] = struct.pack("!H", pseudo_partial(p, 17, len(p) - 20))
    return bytes(p)


def udp_plain(payload: bytes) -> bytes:
    l4 = struct.pack("!HHHH", 5353, 5353, 8 + len(payload), 0) + payload
    p = ipv4("10.0.0.2", "10.0.0.3", 17, l4, ident=7)
    c = 0xFFFF - csum16(bytes(p[12:20]) + struct.pack("!HH", 17, len(l4)) + l4)
    p[26:28] = struct.pack("!H", c or 0xFFFF)
    return bytes(p)


def icmp_echo() -> bytes:
    body = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x42, 1) + b"camex-bulk")
    body[2:4] = struct.pack("!H", 0xFFFF - csum16(bytes(body)))
    return bytes(ipv4("10.0.0.2", "10.0.0.3", 1, bytes(body), ident=8))


def frame(name: str, counter: int, flags: int, records, size: int = 1472) -> dict:
    plain = b"".join(struct.pack("!HH", len(p), g) + p for g, p in records)
    room = size - 20
    n = -(-(len(plain) + 16) // room)
    ad = HDR.pack(0xC2, 6, flags, 0, RECEIVER, counter, n, 0, 0)
    ct = ChaCha20Poly1305(KEY).encrypt(bytes(4) + struct.pack("<Q", counter), plain, ad)
    frags = []
    for i in range(n):
        h = bytearray(ad)
        h[3] = i
        frags.append(bytes(h) + ct[i * room:(i + 1) * room])
    return {"name": name, "receiver": RECEIVER, "counter": counter, "flags": flags,
            "count": n, "datagram_size": size,
            "records": [{"gso_size": g, "packet": p.hex()} for g, p in records],
            "plaintext": plain.hex(), "ad": ad.hex(), "ciphertext": ct.hex(),
            "fragments": [f.hex() for f in frags]}


def build() -> dict:
    frames = [
        frame("tcp-super-3-fragments", 5, 0, [(1398, tcp_super(4000))]),
        frame("two-plain-packets-1-fragment", 6, 0, [(0, udp_plain(b"hello")), (0, icmp_echo())]),
        frame("udp-super-rekey", 7, 0x02, [(500, udp_super(3, 500))]),
        frame("tcp-super-small-datagrams", 2**40 + 3, 0, [(1398, tcp_super(2000))], size=576),
    ]
    f0 = [bytes.fromhex(x) for x in frames[0]["fragments"]]

    def retag(d: bytes, at: int, value: int) -> bytes:
        b = bytearray(d)
        b[at] = value
        return bytes(b)

    good = f0[0]
    malformed = [
        {"name": "header-only", "bytes": good[:20].hex(), "why": "no slice (20 bytes or fewer)"},
        {"name": "short", "bytes": good[:12].hex(), "why": "shorter than the header"},
        {"name": "count-0", "bytes": retag(good, 16, 0).hex(), "why": "count 0"},
        {"name": "count-65", "bytes": retag(good, 16, 65).hex(), "why": "count above 64"},
        {"name": "index-equals-count", "bytes": retag(good, 3, 3).hex(), "why": "index >= count"},
        {"name": "reserved-17", "bytes": retag(good, 17, 1).hex(), "why": "reserved byte 17 set"},
        {"name": "reserved-19", "bytes": retag(good, 19, 0x80).hex(), "why": "reserved byte 19 set"},
        {"name": "not-bulk", "bytes": retag(good, 1, 4).hex(), "why": "type 4 (DATA), not BULK"},
    ]
    swapped = [retag(f0[0], 3, 1), retag(f0[1], 3, 0), f0[2]]
    counter = [bytes(d[:8]) + struct.pack("<Q", 6) + bytes(d[16:]) for d in f0]
    flagged = [retag(d, 2, 0x01) for d in f0]
    tampered = [
        {"name": "indexes-swapped", "frame": frames[0]["name"],
         "fragments": [d.hex() for d in swapped], "opens": False},
        {"name": "counter-changed", "frame": frames[0]["name"],
         "fragments": [d.hex() for d in counter], "opens": False},
        {"name": "flags-changed", "frame": frames[0]["name"],
         "fragments": [d.hex() for d in flagged], "opens": False},
        {"name": "slice-bit-flipped", "frame": frames[0]["name"],
         "fragments": [f0[0].hex(), retag(f0[1], 100, f0[1][100] ^ 1).hex(), f0[2].hex()],
         "opens": False},
    ]
    tlv = [
        {"name": "init-auto-bulk", "message": "INIT",
         "bytes": (bytes((1, 1, 1)) + bytes((7, 1, 1))).hex(), "features": 1},
        {"name": "init-manual-no-features", "message": "INIT",
         "bytes": (bytes((1, 1, 0)) + bytes((2, 5, 10, 0, 0, 2, 24))).hex(), "features": 0},
        {"name": "resp-auto-bulk", "message": "RESP",
         "bytes": (bytes((2, 5, 10, 0, 0, 2, 24)) + bytes((3, 4, 10, 0, 0, 1))
                   + bytes((5, 2)) + struct.pack("!H", 1400) + bytes((7, 1, 1))).hex(),
         "features": 1},
        {"name": "resp-manual-bulk", "message": "RESP", "bytes": bytes((7, 1, 1)).hex(),
         "features": 1},
        {"name": "resp-unknown-bits", "message": "RESP", "bytes": bytes((7, 1, 0xFF)).hex(),
         "features": 0xFF},
    ]
    return {
        "about": "camex v2 BULK frames and TLV_FEATURES (tests/vectors/gen_v2_bulk.py), built "
                 "from docs/PROTOCOL.md §4.6-4.7 without camex.v2.wire",
        "fields": FIELDS,
        "key": KEY.hex(),
        "keylog": f"CAMEX_V2 {RECEIVER:08x} {KEY.hex()}",
        "frames": frames,
        "malformed": malformed,
        "tampered": tampered,
        "tlv": tlv,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()

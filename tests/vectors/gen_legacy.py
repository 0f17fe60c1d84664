"""Regenerate tests/vectors/legacy.json (a development tool, not a test).

    .venv/bin/python tests/vectors/gen_legacy.py [VECTORS_DIR]

The vectors are built WITHOUT camex code, straight from the format
(docs/LEGACY.md) with hashlib, struct and `cryptography`, and
taken from the real captures of the legacy C implementation
(VECTORS_DIR, default $CAMEX_VECTORS or tests/vectors/captures). Both the
codec tests (lead) and the Scapy layer tests read the JSON, so the two
implementations are checked against the same independent bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

GLOBAL = b"demo-global-secret"
C2 = b"per-client-secret-c2"


def key_of(passphrase: bytes) -> bytes:
    return hashlib.blake2b(passphrase, digest_size=32).digest()


def header(ptype, prefix, seq, length) -> bytes:
    return b"CX2P" + bytes([ptype]) + prefix + struct.pack("!QHQ", seq, length, seq)


def seal(passphrase, ptype, prefix, seq, plaintext) -> bytes:
    hdr = header(ptype, prefix, seq, len(plaintext))
    nonce = prefix + struct.pack("!Q", seq)
    return hdr + ChaCha20Poly1305(key_of(passphrase)).encrypt(nonce, plaintext, hdr)


def control_entry(name, source, raw: bytes):
    text = raw.decode("ascii").rstrip("\n")
    toks = text.split(" ")
    fields = [t.split("=", 1) for t in toks[2:] if "=" in t]
    bare = [t for t in toks[2:] if "=" not in t]
    return {"name": name, "source": source, "bytes": raw.hex(), "verb": toks[1],
            "fields": fields, "bare": bare}


def enc_entry(name, source, passphrase, ptype, prefix, seq, plaintext, datagram):
    return {"name": name, "source": source, "passphrase": passphrase.decode(),
            "type": ptype, "prefix": prefix.hex(), "seq": seq,
            "plaintext": plaintext.hex(), "datagram": datagram.hex()}


# A tiny ICMP echo request 10.0.0.2 -> 10.0.0.3, written out by hand.
ICMP_ECHO = bytes.fromhex(
    "45000020000100004001668c0a0000020a000003"  # IPv4, 32 bytes, ICMP
    "08007ff70001000062616e61")                 # echo id=1 seq=0 "bana"


def synthetic():
    ctl, enc = [], []
    msgs = [
        ("register-manual", b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n"),
        ("register-auto", b"CX2P REGISTER MODE=AUTO CLIENT_ID=0203A104B5AE\n"),
        ("register-bare", b"CX2P REGISTER 10.0.0.2\n"),
        ("config-full", b"CX2P CONFIG CLIENT_ID=C1 MTU=1500 LOCAL_CIDR=10.0.0.2/24 "
                        b"GATEWAY_IP=10.0.0.1 ROUTE_CIDR=10.251.0.0/24\n"),
        ("config-two-routes", b"CX2P CONFIG CLIENT_ID=cam.7 MTU=1400 LOCAL_CIDR=10.0.0.9/24 "
                              b"GATEWAY_IP=10.0.0.1 ROUTE_CIDR=10.251.0.0/24 "
                              b"ROUTE_CIDR=192.168.7.0/24\n"),
        ("config-minimal", b"CX2P CONFIG LOCAL_CIDR=10.0.0.2/24 GATEWAY_IP=10.0.0.1\n"),
    ]
    for name, raw in msgs:
        ctl.append(control_entry(name, "spec", raw))
    cases = [
        ("register-seq0", GLOBAL, 1, b"\x01\x02\x03\x04", 0, msgs[0][1]),
        ("config-seq0", GLOBAL, 3, b"\xa0\xb1\xc2\xd3", 0, msgs[3][1]),
        ("data-icmp", GLOBAL, 2, b"\x01\x02\x03\x04", 1, ICMP_ECHO),
        ("data-empty", GLOBAL, 2, b"\xff\xff\xff\xff", 7, b""),
        ("data-seq-max", C2, 2, b"\x00\x00\x00\x01", 2**64 - 1, ICMP_ECHO),
        ("data-seq-2^32", C2, 2, b"\xde\xad\xbe\xef", 2**32, b"\x45" + bytes(range(200))),
        ("data-1400", GLOBAL, 2, b"\x10\x20\x30\x40", 99, bytes((i * 7) & 0xFF for i in range(1400))),
    ]
    for name, pw, t, prefix, seq, pt in cases:
        enc.append(enc_entry(name, "spec", pw, t, prefix, seq, pt, seal(pw, t, prefix, seq, pt)))
    return ctl, enc


def malformed(enc):
    good = bytes.fromhex(enc[2]["datagram"])
    out = [
        ("short-42", good[:42], "shorter than 43 bytes"),
        ("empty", b"", "shorter than 43 bytes"),
        ("bad-magic", b"CX2Q" + good[4:], "wrong magic"),
        ("length-too-big", good[:17] + struct.pack("!H", len(good) - 42) + good[19:], "length field"),
        ("length-too-small", good[:17] + struct.pack("!H", len(good) - 44) + good[19:], "length field"),
        ("trailing-byte", good + b"\0", "length field"),
        ("nonce-seq-differs", good[:9] + struct.pack("!Q", 2) + good[17:], "nonce counter"),
        ("type-0", good[:4] + b"\x00" + good[5:], "unknown type"),
        ("type-4", good[:4] + b"\x04" + good[5:], "unknown type"),
    ]
    return [{"name": n, "datagram": d.hex(), "reason": r} for n, d, r in out]


def tampered(enc):
    """Well-formed datagrams whose tag does not verify (the key is right)."""
    good = bytes.fromhex(enc[2]["datagram"])
    out = [
        ("flipped-ciphertext", good[:30] + bytes([good[30] ^ 1]) + good[31:]),
        ("flipped-tag", good[:-1] + bytes([good[-1] ^ 0x80])),
        ("changed-type", good[:4] + b"\x01" + good[5:]),
        ("changed-prefix", good[:5] + b"\x00" + good[6:]),
    ]
    return [{"name": n, "passphrase": GLOBAL.decode(), "datagram": d.hex()} for n, d in out]


def from_captures(vdir: Path):
    ctl, enc = [], []
    keys = [(GLOBAL, ChaCha20Poly1305(key_of(GLOBAL))), (C2, ChaCha20Poly1305(key_of(C2)))]
    for path in sorted(vdir.glob("upstream-*.pcap")):
        data_per_prefix = {}
        for i, pkt in enumerate(rdpcap(str(path))):
            ip = pkt.getlayer(IP)
            if ip is None or ip.flags.MF or ip.frag or UDP not in ip:
                continue  # fragments are reassembled by camex-dissect, not here
            raw = bytes(ip[UDP].payload)
            src = f"{path.name}#{i + 1}"
            if raw.startswith(b"CX2P "):
                ctl.append(control_entry(f"capture-{len(ctl)}", src, raw))
            elif raw[:4] == b"CX2P":
                ptype, prefix, seq, _length = raw[4], raw[5:9], *struct.unpack("!QH", raw[9:19])
                if ptype == 2:
                    n = data_per_prefix.get(prefix, 0)
                    if n >= 3:
                        continue
                    data_per_prefix[prefix] = n + 1
                for pw, aead in keys:
                    try:
                        pt = aead.decrypt(prefix + raw[9:17], raw[27:], raw[:27])
                    except Exception:
                        continue
                    enc.append(enc_entry(f"capture-{len(enc)}", src, pw, ptype, prefix,
                                         seq, pt, raw))
                    break
                else:
                    raise SystemExit(f"{src}: no passphrase opens it")
    return ctl, enc


def main(argv):
    vdir = Path(argv[1]) if len(argv) > 1 else Path(
        os.environ.get("CAMEX_VECTORS") or REPO / "tests" / "vectors" / "captures")
    ctl, enc = synthetic()
    doc = {
        "about": "camex legacy (CX2P) byte vectors; generated by gen_legacy.py from "
                 "the spec and the captures of the C implementation. All binary "
                 "values are lowercase hex strings.",
        "keys": [{"passphrase": p.decode(), "key": key_of(p).hex(),
                  "fingerprint": hashlib.blake2b(key_of(p), digest_size=16).hexdigest()}
                 for p in (GLOBAL, C2, b"x", b"A" * 63)],
        "control": ctl,
        "encrypted": enc,
        "malformed": malformed(enc),
        "tampered": tampered(enc),
    }
    cctl, cenc = from_captures(vdir)
    doc["control"] += cctl
    doc["encrypted"] += cenc
    out = HERE / "legacy.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{out}: {len(doc['control'])} control, {len(doc['encrypted'])} encrypted, "
          f"{len(doc['malformed'])} malformed, {len(doc['tampered'])} tampered")


if __name__ == "__main__":
    main(sys.argv)

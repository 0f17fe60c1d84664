"""Regenerate tests/vectors/v2.json (a development tool, not a test).

    .venv/bin/python tests/vectors/gen_v2.py

The datagrams come from camex.testing.memlab.sample_traffic() - a reproducible
v2 conversation of the real state machines (INIT, COOKIE, INIT with mac2,
RESP, DATA both ways, keepalives, NOSESSION) - plus two DATA datagrams with
the CLOSE and REKEY flags sealed here. Their FIELDS, however, are decoded
here straight from the tables of docs/PROTOCOL.md §4 with struct, hashlib
and `cryptography`, without camex.v2.wire: MACs are recomputed, the cookie
and every DATA are opened with the PSK and the key log. Both the wire tests
and the Scapy layer tests (tests/unit/test_proto_v2_*.py) read the JSON,
so the two implementations are checked against the same independent
decoding. tests/unit/test_proto_v2_vectors.py fails if this file's output
and the committed JSON drift apart.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from camex.testing.memlab import sample_traffic  # noqa: E402

OUT = HERE / "v2.json"
CLIENT = ("192.0.2.10", 40000)   # the client address memlab uses
SERVER = ("192.0.2.1", 7000)     # memlab has no server address; this is the pcap's


def mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def label_key(label: bytes, psk: bytes) -> bytes:
    return hashlib.blake2s(label + psk).digest()


def nonce(counter: int) -> bytes:
    return bytes(4) + struct.pack("<Q", counter)


def split_records(plain: bytes):
    """(packets, padding) per §4.4: u16be length || packet, 0 ends the list."""
    out, pos = [], 0
    while pos + 2 <= len(plain):
        n = struct.unpack_from("!H", plain, pos)[0]
        if n == 0:
            break
        out.append(plain[pos + 2:pos + 2 + n].hex())
        pos += 2 + n
    return out, plain[pos:].hex()


def decode(d: bytes, psk: bytes, keys: dict, state: dict) -> dict:
    mark, typ = d[0], d[1]
    assert mark == 0xC2, d.hex()
    f: dict = {"type": typ}
    if typ == 1:
        n = d[8]
        f.update(flags=d[2], reserved=d[3], sender_index=struct.unpack_from("<I", d, 4)[0],
                 client_id=d[9:9 + n].decode("ascii"), ephemeral=d[9 + n:41 + n].hex(),
                 encrypted_payload=d[41 + n:-32].hex(), mac1=d[-32:-16].hex(),
                 mac2=d[-16:].hex())
        f["mac1_valid"] = mac(label_key(b"camex v2 mac1", psk), d[:-32]) == d[-32:-16]
        cookie = state.get("cookie")
        f["cookie"] = cookie.hex() if cookie and d[-16:] != bytes(16) else None
        if f["cookie"]:
            f["mac2_valid"] = mac(cookie, d[:-16]) == d[-16:]
        state["last_mac1"] = d[-32:-16]
    elif typ == 2:
        f.update(flags=d[2], reserved=d[3], receiver_index=struct.unpack_from("<I", d, 4)[0],
                 ephemeral=d[8:40].hex(), encrypted_payload=d[40:-16].hex(), mac1=d[-16:].hex())
        f["mac1_valid"] = mac(label_key(b"camex v2 mac1", psk), d[:-16]) == d[-16:]
    elif typ == 3:
        f.update(flags=d[2], reserved=d[3], receiver_index=struct.unpack_from("<I", d, 4)[0],
                 nonce=d[8:20].hex(), encrypted_cookie=d[20:52].hex())
        cookie = ChaCha20Poly1305(label_key(b"camex v2 cookie", psk)).decrypt(
            d[8:20], d[20:52], state["last_mac1"])
        state["cookie"] = cookie
        f["cookie"] = cookie.hex()
    elif typ == 4:
        flags, reserved, receiver, counter = d[2], d[3], *struct.unpack_from("<IQ", d, 4)
        f.update(flags=flags, reserved=reserved, receiver_index=receiver, counter=counter,
                 ciphertext=d[16:-16].hex(), tag=d[-16:].hex())
        key = keys.get(receiver)
        plain = None
        if key is not None:
            plain = ChaCha20Poly1305(key).decrypt(nonce(counter), d[16:], d[:16])
        f["opens"] = plain is not None
        if plain is not None:
            f["plaintext"] = plain.hex()
            f["packets"], f["padding"] = split_records(plain)
    elif typ == 5:
        f.update(flags=d[2], reserved=d[3], index=struct.unpack_from("<I", d, 4)[0])
    return f


def seal(key: bytes, receiver: int, counter: int, flags: int, plain: bytes) -> bytes:
    head = struct.pack("<BBBBIQ", 0xC2, 4, flags, 0, receiver, counter)
    return head + ChaCha20Poly1305(key).encrypt(nonce(counter), plain, head)


def build() -> dict:
    s = sample_traffic()
    psk = bytes.fromhex(s["psk"])
    keys = {}
    for line in s["keylog"]:
        _tag, idx, key = line.split()
        keys[int(idx, 16)] = bytes.fromhex(key)
    datagrams = [(direction, bytes.fromhex(h), "memlab") for direction, h in s["datagrams"]]
    # Flagged DATA, sealed here with the logged keys: the client's CLOSE
    # (empty) and a server REKEY carrying one packet then the end marker and
    # padding - counters past what the conversation used.
    by_dir = {}
    for direction, d, _ in datagrams:
        if d[1] == 4 and struct.unpack_from("<I", d, 4)[0] in keys:
            by_dir[direction] = struct.unpack_from("<I", d, 4)[0]
    inner = bytes.fromhex("4500001c0000000040010000"
                          "0afb0009" "0a000002" "0800f7fd00010001")  # ICMP echo request
    datagrams.append(("s2c", seal(keys[by_dir["s2c"]], by_dir["s2c"], 7, 0x02,
                                  len(inner).to_bytes(2, "big") + inner + bytes(2) + b"pad"),
                      "gen"))
    datagrams.append(("c2s", seal(keys[by_dir["c2s"]], by_dir["c2s"], 9, 0x01, b""), "gen"))
    state: dict = {}
    out = []
    for i, (direction, d, source) in enumerate(datagrams):
        out.append({"name": f"{i:02d}-{direction}", "direction": direction, "source": source,
                    "bytes": d.hex(), **decode(d, psk, keys, state)})
    return {"about": "camex v2 datagrams (tests/vectors/gen_v2.py): fields decoded from "
                     "docs/PROTOCOL.md section 4 without camex.v2.wire",
            "psk": psk.hex(), "keylog": s["keylog"],
            "client": list(CLIENT), "server": list(SERVER), "datagrams": out}


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""CPU per 64 KB BULK frame, in memory: where a TCP stream's time goes.

    python -m bench.bulk_micro [--rounds 7] [--n 2000] [--cipher aes-256-gcm]

One TSO-sized record (an IPv4/TCP super-packet of ~64 KB) is driven
through the steps a v2 daemon takes per frame, without I/O: record packing
(wire.pack_bulk_records), seal (Session.seal_frame: AEAD + glue into one
GSO buffer), the receiver's whole-frame gather (bulk.FastReceiver.whole:
the ciphertext out of a GRO read), open (Session.open_frame), and the
records to TUN items (wire.parse_bulk_records + bulk.tun_items). Each step
alone and the whole chain, in microseconds per frame (best of --rounds,
each the mean of --n calls), beside the bare AEAD on the same sizes (the
floor: compare with `openssl speed -evp chacha20-poly1305`). `--cipher
aes-256-gcm`: a session that agreed on AES-256-GCM (docs/PROTOCOL.md §4.6).
"""

from __future__ import annotations

import argparse
import os
import time

from camex.v2 import bulk, wire
from camex.v2.noise import nonce_bytes
from camex.v2.session import Session, Timers, aead_for, data_keys

DATAGRAM = 1472           # the UDP payload of an outer IPv4 path of MTU 1500


def tcp_super(payload: int) -> bytes:
    """An IPv4/TCP super-packet of `payload` bytes (pseudo-header sum)."""
    n = 40 + payload
    ip = bytes((0x45, 0, n >> 8, n & 255, 0, 0, 0x40, 0, 64, 6, 0, 0,
                10, 0, 0, 1, 10, 0, 0, 2))
    tcp = bytes((0x13, 0x88, 0xC3, 0x50)) + bytes(8) + bytes((0x50, 0x10, 0xFF, 0xFF)) + bytes(4)
    return ip + tcp + os.urandom(payload)


def best(fn, n: int, rounds: int) -> float:
    """Best mean over `rounds` of `n` calls, microseconds of this
    process's CPU time (not wall time: the machine is shared)."""
    out = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(n):
            fn()
        out.append((time.process_time() - t) / n * 1e6)
    return min(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--cipher", choices=("chacha20-poly1305", "aes-256-gcm"),
                    default="chacha20-poly1305")
    a = ap.parse_args(argv)
    key_a, key_b = data_keys(os.urandom(32), os.urandom(32), a.cipher == "aes-256-gcm")
    t = Timers()
    tx = Session(1, 2, key_a, key_b, True, 0.0, t)
    rx = Session(2, 1, key_b, key_a, False, 0.0, t)
    tx.confirmed = rx.confirmed = True
    pkt = tcp_super(44 * 1448)                 # a TSO read: 44 MSS of 1448
    g = DATAGRAM - 80
    records = [(g, pkt)]
    plain = wire.pack_bulk_records(records)
    size = DATAGRAM

    # One sealed frame, as a GRO read returns it (one buffer).
    run = tx.seal_frame(plain, 0.0, size)[0]
    gro = bytes(run.buf)
    got: list = []
    recv = bulk.FastReceiver(None, None, lambda first, ct: got.append((first, ct)))
    assert recv.whole(gro, size) and got
    first, ct = got[0]
    count = first[16]

    def seal():
        tx.send_counter = 5
        tx.seal_frame(plain, 0.0, size)

    def gather():
        recv.whole(gro, size)
        got.clear()

    def open_():
        rx.window = type(rx.window)()
        rx.open_frame(ct, 0, 0, count, 0.0)

    opened = rx.open_frame(ct, 0, 0, count, 0.0)
    assert bytes(opened) == plain, "round trip"

    def to_tun():
        for gg, p in wire.parse_bulk_records(opened):
            bulk.tun_items(gg, p)

    aead = aead_for(key_a)
    nonce = nonce_bytes(7)
    sealed = aead.encrypt(nonce, plain, b"x" * 20)

    def chain():
        tx.send_counter = 5
        r = tx.seal_frame(wire.pack_bulk_records(records), 0.0, size)[0]
        got.clear()
        recv.whole(r.buf, size)
        rx.window = type(rx.window)()
        p = rx.open_frame(got[0][1], 0, 5, count, 0.0)
        for gg, pp in wire.parse_bulk_records(p):
            bulk.tun_items(gg, pp)

    steps = [
        ("aead encrypt (floor)", lambda: aead.encrypt(nonce, plain, b"x" * 20)),
        ("aead decrypt (floor)", lambda: aead.decrypt(nonce, sealed, b"x" * 20)),
        ("pack_bulk_records", lambda: wire.pack_bulk_records(records)),
        ("seal_frame (aead+glue)", seal),
        ("whole (GRO gather)", gather),
        ("open_frame", open_),
        ("records -> tun items", to_tun),
        ("chain", chain),
    ]
    print(f"frame: {len(plain)} B plaintext, {count} fragments of {size} B, {a.cipher}; "
          f"best of {a.rounds} x {a.n}")
    for name, fn in steps:
        us = best(fn, a.n, a.rounds)
        print(f"  {name:26s} {us:8.2f} us  ({len(plain) / us / 1e3:6.2f} GB/s)")


if __name__ == "__main__":
    main()

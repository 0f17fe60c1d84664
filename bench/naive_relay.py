"""The floor under a legacy relay: the least a Python server speaking the
encrypted legacy wire format does per datagram.

One recvfrom, one ChaCha20-Poly1305 open (cryptography), one dictionary
lookup of the inner destination address, one seal, one sendto - per
datagram, nothing batched, in one thread. A REGISTER (MODE=MANUAL
LOCAL_IP=...) maps its address to the sender's endpoint; there is no
replay window, no expiry, no auto mode, no rate limit: less than any
server must do, so that the camera-fleet benchmark (bench/fleet.py) can
say what is left for camex to gain. Datagrams go out under one sender
prefix with one counter, as the C server's do (a C client keeps one
replay window for everything from its server).

With --tun IFNAME GATEWAY it also plays --server-tun: a packet for the
gateway address is written to a TUN (the bench sets its address).

    python -m bench.naive_relay PORT PASSPHRASE [--tun IFNAME GATEWAY]
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys

HEADER = struct.Struct("!4sB4sQHQ")   # docs/LEGACY.md: magic, type, prefix, seq, length, seq
MAGIC = b"CX2P"
REGISTER, DATA = 1, 2
SOCK_BUF = 4 << 20


def serve(port: int, passphrase: bytes, tun: int | None = None, gateway: str | None = None) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from camex.legacy.codec import derive_key

    aead = ChaCha20Poly1305(derive_key(passphrase))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        # camex's own socket buffers (camex/io/udp.py): a setting, not
        # work, and without it a scheduling hiccup of a few milliseconds
        # overflows the default 208 KiB and the floor would lose first.
        sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
    sock.bind(("0.0.0.0", port))
    prefix = os.urandom(4)
    seq = 0
    routes: dict[bytes, tuple] = {}
    gw = socket.inet_aton(gateway) if gateway else None
    recvfrom, sendto, decrypt, encrypt = sock.recvfrom, sock.sendto, aead.decrypt, aead.encrypt
    unpack, pack = HEADER.unpack_from, HEADER.pack
    print(f"naive relay listening on port {port}", flush=True)
    while True:
        data, addr = recvfrom(65535)
        if len(data) < 43:
            continue
        magic, ptype, pfx, nseq, length, _ = unpack(data)
        try:
            pt = decrypt(pfx + nseq.to_bytes(8, "big"), data[27:], data[:27])
        except Exception:  # noqa: BLE001 - InvalidTag or a bad length: dropped
            continue
        if ptype == DATA:
            dst = pt[16:20]
            if dst == gw:
                os.write(tun, pt)
                continue
            to = routes.get(dst)
            if to is None:
                continue
            hdr = pack(MAGIC, DATA, prefix, seq, len(pt), seq)
            try:
                sendto(hdr + encrypt(prefix + seq.to_bytes(8, "big"), pt, hdr), to)
            except OSError:
                pass
            seq += 1
        elif ptype == REGISTER:
            for word in pt.split():
                if word.startswith(b"LOCAL_IP="):
                    try:
                        routes[socket.inet_aton(word[9:].decode())] = addr
                    except (OSError, UnicodeDecodeError):
                        pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    tun = gateway = None
    if "--tun" in argv:
        i = argv.index("--tun")
        if len(argv) < i + 3:
            print(__doc__.split("\n\n")[-1].strip(), file=sys.stderr)
            return 2
        from .naive_tunnel import open_tun

        tun, gateway = open_tun(argv[i + 1], blocking=True), argv[i + 2]
        del argv[i:i + 3]
    if len(argv) != 2 or not argv[0].isdigit():
        print(__doc__.split("\n\n")[-1].strip(), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    serve(int(argv[0]), argv[1].encode(), tun, gateway)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The plain Python tunnels camex is measured against: one packet per system call.

Point-to-point UDP/TUN loops with none of camex's offloads: read one
packet from the TUN, send it as one datagram; receive one datagram, write
it to the TUN. No framing, no replay window, no handshake. The bench runs
them as baselines, to show what the data path work buys over the obvious
program and what Python itself costs on this machine:

- default: one thread, a select loop over both descriptors
  ("naive-python", the first baseline measured);
- --threads: one thread per direction, each blocked in its own read, so
  a packet wakes the reader directly (no select call, no dispatch): the
  shortest path from a packet to Python code and back to the kernel;
- --aead (implies --threads): as --threads, and every packet sealed with
  ChaCha20-Poly1305 from `cryptography` under a key from one X25519
  exchange at start: the least an encrypted Python tunnel must do.
  Its resident memory and idle round trip are the floor under any
  encrypted Python daemon built on the same libraries.

    python -m bench.naive_tunnel [--threads] [--aead] IFNAME LOCAL_IP:PORT PEER_IP:PORT

The bench configures the TUN's address and MTU itself (pyroute2).
"""

from __future__ import annotations

import fcntl
import os
import selectors
import signal
import socket
import struct
import sys
import threading

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

# The --aead key is the same at both ends without any exchange on the
# wire: each end computes X25519 of the same two fixed bench keys. This is
# a baseline's key, not a secret. Each direction has its own key (the end
# with the lower address sends with the first), so the two counters never
# meet under one key.
_BENCH_PRIVATE = (b"\x01" * 32, b"\x02" * 32)


def open_tun(name: str, blocking: bool) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | (0 if blocking else os.O_NONBLOCK))
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _addr(text: str):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def select_loop(tun: int, sock: socket.socket) -> None:
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(tun, selectors.EVENT_READ, "tun")
    sel.register(sock, selectors.EVENT_READ, "udp")
    while True:
        for key, _ in sel.select():
            try:
                if key.data == "tun":
                    sock.send(os.read(tun, 65535))
                else:
                    os.write(tun, sock.recv(65535))
            except OSError:
                # Lost, as a tunnel may: nothing queued, the peer's port not
                # open yet, or the TUN not up yet (EIO).
                pass


def plain_pipes(tun: int, sock: socket.socket):
    """(TUN -> UDP, UDP -> TUN) loops for --threads."""

    def up():
        read, send = os.read, sock.send
        while True:
            try:
                send(read(tun, 65535))
            except OSError:
                pass

    def down():
        recv, write = sock.recv, os.write
        while True:
            try:
                write(tun, recv(65535))
            except OSError:
                pass

    return up, down


def aead_pipes(tun: int, sock: socket.socket, lower: bool):
    """(TUN -> UDP, UDP -> TUN) loops for --aead: a datagram is an 8-byte
    counter, then the sealed packet; the counter is the nonce."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    a, b = (X25519PrivateKey.from_private_bytes(k) for k in _BENCH_PRIVATE)
    shared = a.exchange(b.public_key())
    k1 = ChaCha20Poly1305(shared)
    k2 = ChaCha20Poly1305(bytes(x ^ 0xFF for x in shared))
    tx, rx = (k1, k2) if lower else (k2, k1)
    counter = struct.Struct("<Q")

    def up():
        read, send, seal, pack = os.read, sock.send, tx.encrypt, counter.pack
        n = 0
        while True:
            try:
                p = read(tun, 65535)
                n += 1
                c = pack(n)
                send(c + seal(b"\0\0\0\0" + c, p, None))
            except OSError:
                pass

    def down():
        recv, write, open_ = sock.recv, os.write, rx.decrypt
        while True:
            try:
                d = recv(65535)
                write(tun, open_(b"\0\0\0\0" + d[:8], d[8:], None))
            except (OSError, InvalidTag, ValueError):
                pass

    return up, down


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    aead = "--aead" in argv
    threads = aead or "--threads" in argv
    argv = [a for a in argv if a not in ("--aead", "--threads")]
    if len(argv) != 3 or any(a.startswith("-") for a in argv):
        print(__doc__.split("\n\n")[-2].strip(), file=sys.stderr)
        return 2
    name, local, peer = argv[0], _addr(argv[1]), _addr(argv[2])
    tun = open_tun(name, blocking=threads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(local)
    sock.connect(peer)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    kind = "aead" if aead else "threads" if threads else "select"
    print(f"naive tunnel ({kind}) {name} {local[0]}:{local[1]} <-> {peer[0]}:{peer[1]}",
          flush=True)
    if not threads:
        select_loop(tun, sock)
        return 0
    lower = socket.inet_aton(local[0]) + struct.pack(">H", local[1]) < \
        socket.inet_aton(peer[0]) + struct.pack(">H", peer[1])
    up, down = aead_pipes(tun, sock, lower) if aead else plain_pipes(tun, sock)
    threading.Thread(target=up, name="tun-to-udp", daemon=True).start()
    down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The plain Python tunnel issue 6 starts from: one packet per system call.

A point-to-point UDP/TUN loop with none of camex's offloads: read one
packet from the TUN, send it as one datagram; receive one datagram, write
it to the TUN. No encryption, no framing. The bench runs it as the
"naive-python" baseline, to show what the data path work buys over the
obvious program.

    python -m bench.naive_tunnel IFNAME LOCAL_IP:PORT PEER_IP:PORT

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

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _addr(text: str):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__.split("\n\n")[2].strip(), file=sys.stderr)
        return 2
    name, local, peer = argv[0], _addr(argv[1]), _addr(argv[2])
    tun = open_tun(name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(local)
    sock.connect(peer)
    sock.setblocking(False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"naive tunnel {name} {local[0]}:{local[1]} <-> {peer[0]}:{peer[1]}", flush=True)
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


if __name__ == "__main__":
    sys.exit(main())

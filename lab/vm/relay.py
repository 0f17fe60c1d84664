"""A packet relay between two TUN fds, for the VM benchmark.

    python -m lab.vm.relay camex|tun

Opens side A (/dev/camex, or a tun.ko device `cxbA`) and side B (a tun.ko
device `cxbB`), prints "ready A B" with both interface names, then copies
every packet read on one side to the other until killed.  The relay is the
same code for both variants, so the difference between them is the driver
under side A.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main() -> int:
    kind = sys.argv[1]
    if kind == "camex":
        a, a_name = os.open("/dev/camex", os.O_RDWR | os.O_NONBLOCK), "camex"
    else:
        a, a_name = open_tun("cxbA"), "cxbA"
    b = open_tun("cxbB")
    print("ready", a_name, "cxbB", flush=True)
    other = {a: b, b: a}
    ep = select.epoll()
    ep.register(a, select.EPOLLIN)
    ep.register(b, select.EPOLLIN)
    read, write = os.read, os.write
    while True:
        for fd, _ in ep.poll():
            out = other[fd]
            # Drain what is queued: one poll per burst, not per packet.
            for _ in range(256):
                try:
                    pkt = read(fd, 65535)
                except BlockingIOError:
                    break
                except OSError:
                    return 0      # the interface went away: the run is over
                try:
                    write(out, pkt)
                except OSError:
                    pass      # refused or full: drop, as a link would


if __name__ == "__main__":
    sys.exit(main())

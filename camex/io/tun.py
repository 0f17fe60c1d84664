"""TUN devices: the narrow interface the daemon needs, and its backends.

A device is anything with `name`, `fileno()`, `read()`, `write()` and
`close()`. `/dev/net/tun` (tun.ko) needs TUNSETIFF and lets the kernel pick
a `tunN` name; `/dev/camex` (camex.ko) is one fixed interface named
`camex`, ready at open with no ioctl. Both carry bare IP packets (no
packet-information header).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from ..base.contract import SuperPacket

TUN_PATH = "/dev/net/tun"
CAMEX_PATH = "/dev/camex"
CAMEX_IFNAME = "camex"

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535


class TunError(OSError):
    pass


class TunDevice:
    """An open TUN file descriptor (non-blocking) and its interface name."""

    def __init__(self, fd: int, name: str, path: str):
        self.fd = fd
        self.name = name
        self.path = path

    def fileno(self) -> int:
        return self.fd

    def read(self):
        """One packet, or None when the queue is empty."""
        try:
            return os.read(self.fd, MAX_PACKET)
        except BlockingIOError:
            return None

    def write(self, packet) -> None:
        try:
            os.write(self.fd, packet)
        except BlockingIOError:
            pass  # the kernel's queue is full: drop, as a NIC would
        except OSError as e:
            # EINVAL/EIO for a packet the device refuses: drop only it.
            if e.errno not in (errno.EINVAL, errno.EIO, errno.EMSGSIZE):
                raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_queued(tun, pkts: list) -> None:
    """Write what a core queued for its TUN (a camex.base.contract.Device)
    and empty the list: a lone packet with one write(), anything more with
    write_batch() (in-order TCP segments of one flow become one GSO write;
    a SuperPacket goes whole, or cut by a device without offloads)."""
    if len(pkts) == 1 and type(pkts[0]) is not SuperPacket:
        tun.write(pkts[0])
    else:
        tun.write_batch(pkts)
    pkts.clear()


def _open_tun(path: str, name: str = "tun%d") -> TunDevice:
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError:
        os.close(fd)
        raise
    return TunDevice(fd, ifr[:16].rstrip(b"\0").decode(), path)


def _open_camex(path: str) -> TunDevice:
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    return TunDevice(fd, CAMEX_IFNAME, path)


def open_tun(path: str | None = None) -> TunDevice:
    """Open the TUN backend: `path` if given, else tun.ko, else camex.ko."""
    if path is not None:
        opener = _open_camex if os.path.basename(path) == "camex" else _open_tun
        try:
            return opener(path)
        except OSError as e:
            raise TunError(e.errno, f"cannot open TUN device {path}: {e.strerror}") from None
    errors = []
    for cand, opener in ((TUN_PATH, _open_tun), (CAMEX_PATH, _open_camex)):
        try:
            return opener(cand)
        except OSError as e:
            errors.append(f"{cand}: {e.strerror}")
    raise TunError(errno.ENODEV, "no TUN device usable (" + "; ".join(errors) + ")")

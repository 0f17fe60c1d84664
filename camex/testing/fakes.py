"""In-memory stand-ins for the TUN device, the netlink configurator and the
transport, for unit tests of the daemons without root or namespaces.

They use AF_UNIX SOCK_SEQPACKET socket pairs, which keep packet boundaries
and have real file descriptors, so the real selector loop drives them.
"""

from __future__ import annotations

import socket

from ..base import netpkt
from ..base.contract import SuperPacket


class FakeTun:
    """A camex.base.contract.Device without offloads (as camex.ko's, or tun.ko
    without a virtio-net header); the test holds `peer`, the network
    stack's side: what the test sends there the daemon reads. SuperPackets
    written to it are cut into packets, as camex.io.offload.BatchTun does."""

    offload = False
    tso = False
    why = "fake TUN"

    def __init__(self, name: str = "fake0"):
        self.name = name
        self.path = "fake"
        self._sock, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_items(self):
        try:
            return [self._sock.recv(65535)]
        except BlockingIOError:
            return None

    def write(self, packet) -> None:
        self._sock.send(packet)

    def write_batch(self, packets) -> None:
        for p in packets:
            if type(p) is SuperPacket:
                for seg in netpkt.segment(netpkt.parse_vnet(p.hdr), p.packet):
                    self._sock.send(seg)
            else:
                self._sock.send(p)

    def set_tso(self, on: bool) -> bool:
        return False

    def counters(self) -> dict:
        return {"offload": False, "tso": False, "errors": 0, "coalesced": 0,
                "gso_writes": {"tcp4": 0, "tcp6": 0, "udp": 0}}

    def close(self) -> None:
        self._sock.close()


class FakeLink:
    """Records what the daemon asked of netlink."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.applied = []
        self.cleared = False

    def apply(self, cfg) -> None:
        self.applied.append(cfg)

    def clear(self) -> None:
        self.cleared = True

    def close(self) -> None:
        pass


class FakeTransport:
    """A connect() for the client daemon: each call returns a new connected
    datagram socket; the test gets the server side of each in `servers`."""

    def __init__(self):
        self.servers = []

    def resolve(self, host, port):
        return [(host, port)]

    def connect(self, server, bind_ip=None, bind_dev=None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.servers.append(theirs)
        return _Connected(ours)


class _Connected:
    """A socket that answers getsockname() like a UDP one."""

    def __init__(self, sock):
        self._sock = sock
        self.send = sock.send
        self.recv = sock.recv
        self.fileno = sock.fileno
        self.close = sock.close

    def getsockname(self):
        return ("0.0.0.0", 0)

    def setsockopt(self, *args) -> None:
        pass    # UDP_GRO and buffer sizes: nothing to tune on a socket pair

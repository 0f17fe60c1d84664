"""UDP transport: the client's connected socket and the server's bound one."""

from __future__ import annotations

import errno
import socket

from ..base.contract import DatagramReceiver
from ..base.endpoint import fmt
from ..base.log import fault
from ..v2.framing import split

MAX_DATAGRAM = 65535
SOCK_BUF = 4 << 20  # absorb bursts from a TUN read loop


def _tune(sock: socket.socket, bind_dev: str | None) -> None:
    sock.setblocking(False)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
        except OSError:
            pass
    if bind_dev:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bind_dev.encode())


def resolve(host: str, port: int) -> list:
    """The socket addresses of `host` to try, in getaddrinfo's order
    (RFC 6724: IPv6 first where the host has IPv6 routes), AAAA and A
    records alike; an address literal (brackets allowed) is the one
    candidate. Raises socket.gaierror."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM)
    out = []
    for family, _type, _proto, _name, addr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addr = (addr[0], addr[1])
            if addr not in out:
                out.append(addr)
    if not out:
        raise socket.gaierror(socket.EAI_NONAME, "no IPv4 or IPv6 address")
    return out


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def client_socket(server, bind_ip: str | None = None, bind_dev: str | None = None):
    """A new socket (new source port) connected to `server` (ip, port), of
    the server address's family. connect() fails at once (ENETUNREACH,
    EADDRNOTAVAIL) where that family has no route or `bind_ip` is of the
    other family: the caller then tries the next address."""
    family = family_of(server[0])
    if bind_ip and family_of(bind_ip) != family:
        raise OSError(errno.EAFNOSUPPORT, f"--bind-ip {bind_ip} is not of the "
                      f"server address's family ({server[0]})")
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        _tune(sock, bind_dev)
        if bind_ip:
            sock.bind((bind_ip, 0))
        sock.connect(server)
    except OSError:
        sock.close()
        raise
    return sock


def server_socket(port: int, bind_ip: str | None = None, bind_dev: str | None = None):
    """The server's socket: on `bind_ip` (IPv4 or IPv6), else one
    dual-stack AF_INET6 socket on :: (IPv4 peers arrive v4-mapped; see
    camex.base.endpoint), else, where the host has no IPv6, AF_INET on
    0.0.0.0."""
    if bind_ip:
        return _bound(family_of(bind_ip), bind_ip, port, bind_dev)
    try:
        return _bound(socket.AF_INET6, "::", port, bind_dev)
    except OSError as e:
        if e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
            raise
    return _bound(socket.AF_INET, "0.0.0.0", port, bind_dev)


def _bound(family: int, ip: str, port: int, bind_dev: str | None):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6 and ip == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        _tune(sock, bind_dev)
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def receive(recv, receiver: DatagramReceiver, addressed: bool, now: float, burst: bool,
            backlog, flush_at: int, flush, on_error) -> None:
    """One readiness event of a daemon's UDP socket (client and server alike).

    `recv()` -> (data, size, address) (camex.io.gso.gro_receiver): `data`
    holds datagrams of `size` bytes (a GRO batch), or is one datagram when
    `size` is 0. They go to the core's `receiver` (camex.base.contract): with
    the sender's address (`addressed`, a server) or without (a client, whose
    socket is connected): `receiver(data, [address,] now)`. A
    lone datagram (`burst` False) is delivered and flushed at once, without
    the receive that would only find the queue empty: epoll is
    level-triggered and calls again if more came. In a burst, up to BATCH
    receives, with a `flush()` whenever `backlog()` reaches `flush_at`.
    `on_error(exc)` -> True to go on receiving (ICMP errors of earlier
    sends surface here), False to stop. Each GRO batch is offered to
    `receiver.whole` first, uncut (True: it took it, e.g. a whole v2 BULK
    frame); else it is split, and a batch of more than two goes to
    `receiver.many` in one call (camex.v2.bulk.FastReceiver).
    """
    one = receiver.one
    for _ in range(BATCH):
        try:
            data, size, addr = recv()
        except BlockingIOError:
            break
        except OSError as e:
            if on_error(e):
                continue
            break
        rest = (addr, now) if addressed else (now,)
        try:
            if not size:
                one(data, *rest)
            else:
                deliver_gro(receiver, data, size, *rest)
        except Exception as e:  # noqa: BLE001 - see log.fault
            fault(e, f"a datagram from {fmt(addr) if addr else 'the server'}")
        if not burst:
            break
        if backlog() >= flush_at:
            flush()
    flush()


def deliver_gro(receiver: DatagramReceiver, data, size: int, *rest) -> None:
    """A GRO read (datagrams of `size` bytes, one sender) into `receiver`:
    offered whole first (a v2 BULK frame), else cut apart, and a batch of
    more than two in one `many` call."""
    if not receiver.whole(data, size, *rest):
        deliver_cut(receiver, data, size, *rest)


def deliver_cut(receiver: DatagramReceiver, data, size: int, *rest) -> None:
    """A GRO read that is not one whole frame, cut apart: a batch of more
    than two in one `many` call, else one by one."""
    datagrams = split(data, size)
    if len(datagrams) > 2:
        receiver.many(datagrams, *rest)
    else:
        one = receiver.one
        for d in datagrams:
            one(d, *rest)


def one_read(receiver: DatagramReceiver):
    """`fn(data, address, size, now)`: one read into a server core's
    `receiver` as receive() hands it over (a GRO read of several datagrams
    whole, in one `many` call, or one by one), an exception in the core
    logged and the datagram dropped."""
    def read(data, addr, size: int, now: float) -> None:
        try:
            if not size:
                receiver.one(data, addr, now)   # (looked up: a core may change it)
            else:
                deliver_gro(receiver, data, size, addr, now)
        except Exception as e:  # noqa: BLE001 - see log.fault
            fault(e, f"a datagram from {fmt(addr)}")
    return read


def receive_batch(recv, take, other, now: float, rounds: int, full: int, flush,
                  on_error) -> None:
    """One readiness event of a server's UDP socket read with recvmmsg
    (camex.io.mmsg.Batch.recv: [(data, address, gro_size)], many senders
    per call). `take(items, now, other)` is the core's batch path
    (ServerMux.datagrams_received), which hands what it does not take to
    `other` (one_read()). After each batch, `flush()`: the core's outbox
    goes out in as few sends as possible, and no datagram outlives the
    receive buffers it came in. At most `rounds` batches; a batch of fewer
    than `full` reads means the socket is empty (epoll, level-triggered,
    calls again if more came meanwhile).
    """
    for _ in range(rounds):
        try:
            items = recv()
        except OSError as e:
            if on_error(e):
                continue
            break
        if not items:
            break
        take(items, now, other)
        flush()
        if len(items) < full:
            break


BATCH = 64  # datagrams or packets handled per readiness event

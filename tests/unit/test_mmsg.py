"""camex.io.mmsg: recvmmsg/sendmmsg over loopback UDP sockets."""

from __future__ import annotations

import errno
import mmap
import socket
import struct
import sys
import time

import pytest

from camex.base.endpoint import canonical
from camex.io import gso, libc, mmsg

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="libc without recvmmsg")


@pytest.fixture(autouse=True, params=["cffi", "ctypes"])
def backend(request, monkeypatch) -> str:
    """Every test here runs on both of camex.io.libc's backends, picked as
    a daemon's is: cffi's where cryptography has loaded it, else ctypes."""
    if request.param == "cffi":
        import _cffi_backend  # noqa: F401
    else:
        monkeypatch.delitem(sys.modules, "_cffi_backend", raising=False)
    assert libc.backend().name == request.param
    return request.param


def udp(bind=("127.0.0.1", 0)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(bind)
    s.setblocking(False)
    return s


def drain(sock, wait=1.0):
    sock.settimeout(wait)
    out = []
    try:
        while True:
            out.append(sock.recvfrom(70000))
            sock.settimeout(0.05)
    except (socket.timeout, BlockingIOError):
        pass
    return out


def test_one_recv_takes_datagrams_of_many_senders_with_their_addresses():
    rx = udp()
    senders = [udp() for _ in range(5)]
    sent = []
    for i, s in enumerate(senders):
        for k in range(3):
            d = bytes([i, k]) * (100 + 50 * i)
            s.sendto(d, rx.getsockname())
            sent.append((d, s.getsockname()))
    batch = mmsg.Batch(rx, size=8)
    got = []
    while True:
        items = batch.recv()
        if not items:
            break
        assert len(items) <= 8
        got += [(bytes(v), a, size) for v, a, size in items]
    assert got == [(d, a, 0) for d, a in sent]
    assert batch.recv() == []      # empty socket: no error, nothing
    for s in senders + [rx]:
        s.close()
    batch.close()


def test_views_are_valid_until_the_next_receive_and_large_datagrams_are_whole():
    rx, tx = udp(), udp()
    big = bytes(range(256)) * 250     # 64,000 bytes: one slot holds it whole
    tx.sendto(big, rx.getsockname())
    tx.sendto(b"small", rx.getsockname())
    batch = mmsg.Batch(rx, size=4)
    items = batch.recv()
    assert [bytes(v) for v, _, _ in items] == [big, b"small"]
    assert batch.truncated == 0


def test_send_reaches_several_endpoints_in_order_in_one_call():
    tx = udp()
    rxs = [udp() for _ in range(4)]
    pairs = [(f"to {i} #{k}".encode() * 20, r.getsockname())
             for k in range(3) for i, r in enumerate(rxs)]
    batch = mmsg.Batch(tx, size=64)
    batch.send(pairs)
    assert batch.sends == 1           # twelve datagrams, one sendmmsg
    for r in rxs:
        got = drain(r)
        assert [d for d, _ in got] == [d for d, a in pairs if a == r.getsockname()]
        assert {a for _, a in got} == {tx.getsockname()}


def test_send_more_than_a_batch_and_oversized_ones_still_arrive():
    tx, rx = udp(), udp()
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    batch = mmsg.Batch(tx, size=4, send_slot=2048)
    pairs = [(bytes([k]) * 100, rx.getsockname()) for k in range(10)]
    pairs.insert(5, (b"L" * 5000, rx.getsockname()))   # above send_slot: sendto
    batch.send(pairs)
    assert [d for d, _ in drain(rx)] == [d for d, _ in pairs]


def test_a_refused_destination_loses_only_its_own_datagram():
    """An ICMP port unreachable of an earlier send is reported by the next
    send on the socket (with IP_RECVERR, as a connected socket would): the
    datagram that meets it is sent again, the rest of the batch goes on."""
    tx = udp()
    tx.setsockopt(socket.IPPROTO_IP, 11, 1)   # IP_RECVERR
    closed = udp()
    dead = closed.getsockname()
    closed.close()                 # nobody listens there now
    rxs = [udp() for _ in range(3)]
    errors = []
    batch = mmsg.Batch(tx, size=16, on_error=lambda e, a: errors.append((e.errno, a)))
    # Met in the middle of a call (sendmmsg stops there) ...
    batch.send([(b"to nobody", dead)] + [(b"first %d" % i, r.getsockname())
                                         for i, r in enumerate(rxs)])
    # ... and by the first datagram of a call.
    tx.sendto(b"again to nobody", dead)
    batch.send([(b"second %d" % i, r.getsockname()) for i, r in enumerate(rxs)])
    for i, r in enumerate(rxs):
        assert [d for d, _ in drain(r)] == [b"first %d" % i, b"second %d" % i]
    assert errors == []            # refused is not an error worth a log line


def test_a_full_buffer_drops_without_stopping_the_batch(monkeypatch, backend):
    """EAGAIN on one datagram (a full send buffer) drops that one only."""
    tx, rx = udp(), udp()
    batch = mmsg.Batch(tx, size=8)
    real = batch._sendmmsg
    calls = []

    def first_fails(fd, ptr, n, flags):
        calls.append(n)
        if len(calls) == 1:
            libc.backend(backend).set_errno(errno.EAGAIN)
            return -1
        return real(fd, ptr, n, flags)

    monkeypatch.setattr(batch, "_sendmmsg", first_fails)
    batch.send([(b"%d" % k, rx.getsockname()) for k in range(5)])
    assert calls == [5, 4]
    assert [d for d, _ in drain(rx)] == [b"1", b"2", b"3", b"4"]


def test_other_send_errors_are_reported_with_the_address_and_the_rest_goes_on():
    tx, rx = udp(), udp()
    errors = []
    batch = mmsg.Batch(tx, size=8, on_error=lambda e, a: errors.append((e.errno, a)))
    bad = ("255.255.255.255", 9)     # broadcast without SO_BROADCAST: EACCES
    batch.send([(b"a", rx.getsockname()), (b"b", bad), (b"c", rx.getsockname())])
    assert errors == [(errno.EACCES, bad)]
    assert [d for d, _ in drain(rx)] == [b"a", b"c"]


def test_an_address_of_another_family_falls_back_to_sendto():
    tx, rx = udp(), udp()
    errors = []
    batch = mmsg.Batch(tx, size=8, on_error=lambda e, a: errors.append(a))
    batch.send([(b"x", ("::1", 9)), (b"y", rx.getsockname())])
    assert [d for d, _ in drain(rx)] == [b"y"]
    assert errors == [("::1", 9)]     # sendto's own error, reported once


def test_ipv6_socket_addresses_round_trip():
    try:
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rx.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx.bind(("::1", 0))
    rx.setblocking(False)
    batch = mmsg.Batch(tx, size=4)
    batch.send([(b"six", rx.getsockname())])
    rb = mmsg.Batch(rx, size=4)
    drain_until = [(bytes(v), a[:2]) for v, a, _ in _wait_recv(rb)]
    assert drain_until == [(b"six", tx.getsockname()[:2])]


def _wait_recv(batch, tries=100):
    for _ in range(tries):
        items = batch.recv()
        if items:
            return items
        time.sleep(0.01)
    return []


def test_gro_read_says_its_datagram_size():
    """With UDP GRO on, one read may hold several datagrams of a sender:
    recv() reports their size, as gso.gro_receiver does."""
    if not gso.probe().udp_gro or not gso.probe().udp_gso:
        pytest.skip("kernel without UDP GSO/GRO")
    rx, tx = udp(), udp()
    gso.enable_gro(rx)
    gso.send_gso(tx, [b"g" * 1000] * 4, 1000, rx.getsockname())
    items = _wait_recv(mmsg.Batch(rx, size=4))
    sizes = [(len(v), size) for v, _, size in items]
    # Coalesced (one read of 4000 bytes, size 1000) or not, never lost.
    assert sum(n for n, _ in sizes) == 4000
    assert all(size in (0, 1000) for _, size in sizes)
    assert all(size == 1000 for n, size in sizes if n > 1000)


def test_ipv6_sockaddrs_are_canonical_endpoints_both_ways():
    """sockaddr_in6 both ways: what comes back is the canonical endpoint
    (camex.base.endpoint): a v4-mapped peer as its dotted quad, a
    link-local one with its scope, no flow label; the scope id goes out in
    host order and a flow label in network order; a canonical endpoint
    goes out as the socket module's form of it would."""
    pton, ntop = mmsg._pton(socket.AF_INET6), mmsg._ntop(socket.AF_INET6)
    for addr in (("fe80::1", 7000, 0, 1), ("2001:db8::5", 9, 0x12345, 0),
                 ("::ffff:192.0.2.1", 40000, 0, 0)):
        name = pton(addr)
        assert len(name) == 28
        assert struct.unpack_from("!I", name, 4)[0] == addr[2]
        assert struct.unpack_from("=I", name, 24)[0] == addr[3]
        ep = canonical(addr)
        assert ntop(name) == ep
        assert pton(ep) == pton(addr[:2] + (0, addr[3]))
    assert ntop(pton(("::ffff:192.0.2.1", 40000, 0, 0))) == ("192.0.2.1", 40000)
    assert ntop(pton(("192.0.2.1", 40000))) == ("192.0.2.1", 40000)
    assert ntop(pton(("fe80::1%1", 7000))) == ("fe80::1%1", 7000)


@pytest.mark.skipif(not mmsg.available(), reason="libc without recvmmsg")
def test_a_dual_stack_socket_reads_and_answers_ipv4_peers_as_dotted_quads():
    """The server's default socket (AF_INET6, IPV6_V6ONLY off): IPv4
    peers read by recvmmsg carry the endpoint the cores know them by, and
    a batch sent to that endpoint reaches them."""
    srv = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", 0))
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for p in peers:
            p.bind(("127.0.0.1", 0))
            p.settimeout(2)
            p.sendto(b"hello %d" % p.getsockname()[1], ("127.0.0.1", srv.getsockname()[1]))
        batch = mmsg.Batch(srv, 8)
        got: list = []
        for _ in range(1000):   # loopback: they are there at once
            got += [(bytes(d), a) for d, a, _ in batch.recv()]
            if len(got) == 3:
                break
        assert sorted(a for _, a in got) == sorted(p.getsockname() for p in peers)
        assert all(d == b"hello %d" % a[1] for d, a in got)
        batch.send([(b"back " + d, a) for d, a in got])
        for p in peers:
            assert p.recv(100) == b"back hello %d" % p.getsockname()[1]
    finally:
        srv.close()
        for p in peers:
            p.close()


@pytest.mark.skipif(not mmsg.available(), reason="libc without recvmmsg")
def test_released_slots_give_their_pages_back_and_still_receive():
    """After a burst of large reads the idle daemon gives the slots' pages
    back (resident memory of the mapping drops to nothing), and the next
    reads work as before."""
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), \
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    batch = mmsg.Batch(a, 8)

    def resident_kib() -> int:
        # The ring's pages present in memory, by /proc/self/pagemap (bit 63
        # of each page's entry): a private mapping may share its smaps entry
        # with neighbouring anonymous memory.
        page = mmap.PAGESIZE
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(ctypes_address(batch) // page * 8)
            entries = f.read(len(batch._rbuf) // page * 8)
        return sum(e >> 63 for (e,) in struct.iter_unpack("=Q", entries)) * page // 1024

    try:
        for k in range(8):
            b.sendto(bytes([k + 1]) * 60000, a.getsockname())
        got = []
        for _ in range(1000):
            got += [bytes(d) for d, _a, _s in batch.recv()]
            if len(got) == 8:
                break
        assert len(got) == 8 and resident_kib() >= 8 * 58
        del got
        batch.release()
        assert resident_kib() == 0
        # Freed, not only unmapped (shared memory would keep them, and the
        # datagrams in them): the slots read back empty.
        assert batch._rbuf[:] == bytes(len(batch._rbuf))
        b.sendto(b"after", a.getsockname())
        for _ in range(1000):
            items = batch.recv()
            if items:
                break
        assert [bytes(d) for d, _a, _s in items] == [b"after"]
    finally:
        a.close()
        b.close()


def ctypes_address(batch) -> int:
    import ctypes
    return ctypes.addressof(ctypes.c_char.from_buffer(batch._rbuf))


def test_a_receive_error_is_raised_as_recvfrom_raises_it_and_then_reads_go_on():
    """A pending ICMP error (port unreachable, with IP_RECVERR) comes out of
    recv() as the OSError recvfrom() raises for it, once."""
    tx, rx = udp(), udp()
    tx.setsockopt(socket.IPPROTO_IP, 11, 1)   # IP_RECVERR
    closed = udp()
    dead = closed.getsockname()
    closed.close()
    batch = mmsg.Batch(tx, size=4)

    def first_error(read):
        for _ in range(1000):
            try:
                read()
            except BlockingIOError:
                pass
            except OSError as e:
                return e
            time.sleep(0.001)   # (the ICMP error comes back at once)

    errors = []
    for read in (lambda: tx.recvfrom(100), batch.recv):
        tx.sendto(b"to nobody", dead)
        errors.append(first_error(read))
    assert [(type(e), e.errno) for e in errors] == [(ConnectionRefusedError, errno.ECONNREFUSED)] * 2
    rx.sendto(b"after", tx.getsockname())
    assert [(bytes(d), a) for d, a, _ in _wait_recv(batch)] == [(b"after", rx.getsockname())]


def test_the_headers_are_laid_out_as_the_c_compiler_lays_them_out():
    import ctypes

    class IOVec(ctypes.Structure):
        _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

    class MsgHdr(ctypes.Structure):
        _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                    ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                    ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                    ("msg_flags", ctypes.c_int)]

    class MMsgHdr(ctypes.Structure):
        _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]

    assert (mmsg._MSZ, mmsg._ISZ, mmsg._IOV_LEN) == \
        (ctypes.sizeof(MMsgHdr), ctypes.sizeof(IOVec), IOVec.iov_len.offset)
    assert (mmsg._OFF_NAMELEN, mmsg._OFF_CONTROLLEN, mmsg._OFF_FLAGS, mmsg._OFF_LEN) == \
        (MsgHdr.msg_namelen.offset, MsgHdr.msg_controllen.offset, MsgHdr.msg_flags.offset,
         MMsgHdr.msg_len.offset)

"""Outer endpoints: the canonical form of a socket address, its text, the
mapping back for an AF_INET6 socket, and the dual-stack server socket's
receive and send edges (loopback only, both families)."""

from __future__ import annotations

import socket

import pytest

from camex.base import endpoint
from camex.io import gso, udp


@pytest.mark.parametrize("addr, ep", [
    (("::ffff:192.0.2.1", 7000, 0, 0), ("192.0.2.1", 7000)),
    (("2001:db8::2", 7000, 5, 0), ("2001:db8::2", 7000)),
    # A link-local peer keeps its interface: the reply needs it.
    (("fe80::2", 7000, 0, 3), ("fe80::2%3", 7000)),
    (("192.0.2.1", 7000), ("192.0.2.1", 7000)),
    # An IPv6 address whose text merely begins like a mapped one is kept.
    (("::ffff:c000:201", 1, 0, 0), ("::ffff:c000:201", 1)),
])
def test_canonical(addr, ep):
    assert endpoint.canonical(addr) == ep


@pytest.mark.parametrize("ep, text", [
    (("192.0.2.1", 7000), "192.0.2.1:7000"),
    (("2001:db8::2", 7000), "[2001:db8::2]:7000"),
    (("::ffff:192.0.2.1", 7000, 0, 0), "192.0.2.1:7000"),
    (("fe80::2", 7000, 0, 3), "[fe80::2%3]:7000"),
    (None, "?"),
])
def test_fmt(ep, text):
    assert endpoint.fmt(ep) == text


def test_fmt_host_names_and_literals():
    assert endpoint.fmt_host("vpn.example.net", 7000) == "vpn.example.net:7000"
    assert endpoint.fmt_host("2001:db8::1", 7000) == "[2001:db8::1]:7000"


def test_sockaddr_v6_round_trip():
    for ep in (("192.0.2.1", 9), ("2001:db8::2", 9)):
        assert endpoint.canonical(endpoint.sockaddr_v6(ep)) == ep
    assert endpoint.sockaddr_v6(("192.0.2.1", 9)) == ("::ffff:192.0.2.1", 9)


@pytest.mark.parametrize("text, why", [
    ("fe80::1%eth0", "scope id"), ("::ffff:10.0.0.1", "v4-mapped"),
    ("[10.0.0.1]", "only an IPv6 address"), ("[::1", "unbalanced"),
    ("[nonsense]", "only an IPv6 address"), ("[1:2:zz]", "not an IPv4 or IPv6"), ("fe80::1", "link-local"),
])
def test_parse_ip_refuses(text, why):
    with pytest.raises(ValueError, match=why):
        endpoint.parse_ip(text)


def test_outer_headers():
    assert endpoint.outer_ip_udp(False) == 28 and endpoint.outer_ip_udp(True) == 48


def test_default_server_socket_serves_both_families():
    srv = udp.server_socket(0)
    try:
        assert srv.family == socket.AF_INET6
        port = srv.getsockname()[1]
        recv = gso.gro_receiver(srv)
        to_sock = gso.sockaddr_for(srv)
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            c = socket.socket(family, socket.SOCK_DGRAM)
            c.settimeout(2)
            c.bind((host, 0))
            c.sendto(b"ping", (host, port))
            srv.setblocking(True)
            data, size, ep = recv()
            # The canonical endpoint: what the cores and status see.
            assert (data, size) == (b"ping", 0)
            assert ep == (host, c.getsockname()[1])
            srv.sendto(b"pong", to_sock(ep))
            assert c.recv(10) == b"pong"
            c.close()
    finally:
        srv.close()


def test_sender_maps_groups_for_a_dual_stack_socket():
    srv = udp.server_socket(0)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        c.bind(("127.0.0.1", 0))
        c.settimeout(2)
        sender = gso.Sender(srv, gso.probe().udp_gso, None, gso.sockaddr_for(srv))
        ep = c.getsockname()
        sender.send_grouped([(b"a" * 100, ep), (b"b" * 100, ep), (b"c" * 40, ep)])
        assert [c.recv(200) for _ in range(3)] == [b"a" * 100, b"b" * 100, b"c" * 40]
    finally:
        srv.close()
        c.close()


def test_ipv4_socket_needs_no_mapping():
    s = udp.server_socket(0, "127.0.0.1")
    try:
        assert s.family == socket.AF_INET and gso.sockaddr_for(s) is None
    finally:
        s.close()


def test_server_socket_on_an_ipv6_address_and_client_of_that_family():
    srv = udp.server_socket(0, "::1")
    try:
        assert srv.family == socket.AF_INET6
        port = srv.getsockname()[1]
        assert udp.resolve("[::1]", port) == [("::1", port)]
        c = udp.client_socket(("::1", port))
        assert c.family == socket.AF_INET6
        c.send(b"x")
        srv.setblocking(True)
        assert srv.recvfrom(10)[0] == b"x"
        c.close()
        with pytest.raises(OSError, match="not of the server address's family"):
            udp.client_socket(("::1", port), bind_ip="127.0.0.1")
    finally:
        srv.close()


def test_resolve_names_both_families():
    addrs = udp.resolve("localhost", 7000)
    assert ("127.0.0.1", 7000) in addrs
    assert all(len(a) == 2 for a in addrs)


def test_server_falls_back_to_ipv4_where_the_host_has_no_ipv6(monkeypatch):
    real = socket.socket

    def no_ipv6(family=socket.AF_INET, *args, **kw):
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")   # EAFNOSUPPORT
        return real(family, *args, **kw)
    monkeypatch.setattr(udp.socket, "socket", no_ipv6)
    s = udp.server_socket(0)
    try:
        assert s.family == socket.AF_INET and s.getsockname()[0] == "0.0.0.0"
    finally:
        s.close()


def test_server_bind_errors_other_than_no_ipv6_are_raised():
    taken = udp.server_socket(0)
    try:
        with pytest.raises(OSError) as e:
            udp.server_socket(taken.getsockname()[1])
        assert e.value.errno == 98   # EADDRINUSE: not hidden behind an IPv4 fallback
    finally:
        taken.close()

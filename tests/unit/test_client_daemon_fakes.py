"""The client daemon's event loop over in-memory fakes of the TUN device,
netlink and the transport: no root, no namespaces, real selector."""

import ipaddress
import socket
import threading
import time

import pytest
from camex.base.aead import ChaCha20Poly1305

from camex.daemon.client import ClientDaemon, ClientIO
from camex.testing.fakes import FakeLink, FakeTransport, FakeTun
from camex.legacy import codec
from camex.daemon.options import parse_args


def ip_packet(src, dst, payload=b"hello-through-the-tunnel"):
    total = 20 + len(payload)
    return (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0])
            + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + payload)


def recv(sock, timeout=5.0):
    sock.settimeout(timeout)
    return sock.recv(65535)


@pytest.fixture
def running():
    started = []

    def start(argv):
        tun, transport, links = FakeTun(), FakeTransport(), []

        def link(name):
            links.append(FakeLink(name))
            return links[-1]

        io = ClientIO(open_tun=lambda path: tun, link=link, resolve=transport.resolve,
                      connect=transport.connect, prepare_interface=lambda name: None,
                      signals=False)
        opts = parse_args(argv)
        opts.control_socket = ""  # no socket in /run for a unit test
        daemon = ClientDaemon(opts, io)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        started.append((daemon, thread))
        deadline = time.monotonic() + 5
        while not transport.servers and time.monotonic() < deadline:
            time.sleep(0.01)
        return daemon, tun, transport, links

    yield start
    for daemon, thread in started:
        daemon.loop.stop()
        thread.join(5)
        assert not thread.is_alive()


def test_auto_client_registers_configures_and_moves_packets(running):
    daemon, tun, transport, links = running(
        ["-M", "client", "-a", "-n", "C1", "-s", "server.example", "-p", "7000"])
    server = transport.servers[0]
    assert recv(server) == b"CX2P REGISTER MODE=AUTO CLIENT_ID=C1\n"
    server.send(codec.config_message("C1", 1400, "10.0.0.2/24", "10.0.0.1", ["10.251.0.0/24"]))
    deadline = time.monotonic() + 5
    while not links[0].applied and time.monotonic() < deadline:
        time.sleep(0.01)
    cfg = links[0].applied[0]
    assert str(cfg.address) == "10.0.0.2/24" and cfg.mtu == 1400
    assert [str(r) for r in cfg.routes] == ["10.251.0.0/24"]
    out = ip_packet("10.0.0.2", "10.0.0.3")
    tun.peer.send(out)
    assert recv(server) == out
    back = ip_packet("10.0.0.3", "10.0.0.2")
    server.send(back)
    assert recv(tun.peer) == back
    # IPv6 from the stack never enters a legacy tunnel.
    tun.peer.send(b"\x60" + bytes(47))
    tun.peer.send(out)
    assert recv(server) == out
    daemon.loop.stop()
    time.sleep(0.2)
    assert links[0].cleared


def test_encrypted_manual_client_seals_and_rejects_forgeries(running):
    daemon, tun, transport, links = running(
        ["-M", "client", "-l", "10.0.0.2/24", "-s", "10.250.0.1", "-p", "7000",
         "-e", "-k", "demo-global-secret", "--protocol", "legacy"])
    server = transport.servers[0]
    aead = ChaCha20Poly1305(codec.derive_key(b"demo-global-secret"))
    reg = recv(server)
    assert codec.open_datagram(aead, reg) == b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n"
    assert links[0].applied[0].mtu == 1500 - 28 - 43
    pkt = ip_packet("10.0.0.3", "10.0.0.2")
    forged = codec.seal(ChaCha20Poly1305(codec.derive_key(b"wrong")), codec.T_DATA,
                        b"SRVR", 0, ip_packet("10.0.0.3", "10.0.0.2", b"forged"))
    server.send(forged)
    good = codec.seal(aead, codec.T_DATA, b"SRVR", 0, pkt)
    server.send(good)
    server.send(good)  # a replay
    server.send(codec.seal(aead, codec.T_DATA, b"SRVR", 1, pkt))
    assert recv(tun.peer) == pkt
    assert recv(tun.peer) == pkt
    tun.peer.settimeout(0.3)
    with pytest.raises(socket.timeout):  # an alias of TimeoutError only from 3.10
        tun.peer.recv(65535)
    st = daemon.status()
    assert st["drops"] == {"auth": 1, "replay": 1}
    assert st["rx_packets"] == 2


def test_auto_protocol_offers_v2_then_falls_back_to_legacy_for_a_silent_server(running):
    """What a C server sees: v2 INITs it drops, then the legacy REGISTER."""
    daemon, tun, transport, links = running(
        ["-M", "client", "-l", "10.0.0.2/24", "-s", "10.250.0.1", "-p", "7000",
         "-e", "-k", "demo-global-secret"])
    server = transport.servers[0]
    first = recv(server)
    assert first[0] == 0xC2  # a v2 INIT
    aead = ChaCha20Poly1305(codec.derive_key(b"demo-global-secret"))
    t0 = time.monotonic()
    while True:
        d = recv(server, 6)
        if d[:4] == codec.MAGIC:
            break
    assert time.monotonic() - t0 < 5
    assert codec.open_datagram(aead, d) == b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n"
    # Legacy traffic flows from then on.
    pkt = ip_packet("10.0.0.3", "10.0.0.2")
    server.send(codec.seal(aead, codec.T_DATA, b"SRVR", 0, pkt))
    assert recv(tun.peer) == pkt
    assert daemon.status()["protocol"] == "legacy"


@pytest.mark.parametrize("gap", [0.0, 1e9], ids=["lone-packet-path", "burst-path"])
def test_lone_packet_path_moves_exactly_what_the_batched_path_does(running, monkeypatch, gap):
    """BURST_GAP 0: every readiness event is a lone packet (one read, sent at
    once, no draining read; epoll calls again for the rest). 1e9: every
    event is a burst, drained in batches. Both deliver the same packets, in
    order, both ways."""
    import camex.daemon.client as cd
    monkeypatch.setattr(cd, "BURST_GAP", gap)
    daemon, tun, transport, links = running(
        ["-M", "client", "-l", "10.0.0.2/24", "-s", "10.250.0.1", "-p", "7000",
         "--protocol", "legacy"])
    server = transport.servers[0]
    assert recv(server) == b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n"
    out = [ip_packet("10.0.0.2", "10.0.0.3", b"out-%03d" % i + bytes(i)) for i in range(150)]
    for p in out:
        tun.peer.send(p)
    assert [recv(server) for _ in out] == out
    back = [ip_packet("10.0.0.3", "10.0.0.2", b"back-%03d" % i + bytes(i)) for i in range(150)]
    for p in back:
        server.send(p)
    assert [recv(tun.peer) for _ in back] == back
    assert daemon.status()["tx_packets"] == 150 and daemon.status()["rx_packets"] == 150


def test_a_client_whose_tun_cannot_take_super_packets_asks_for_data_not_bulk(running):
    """A TUN without a virtio-net header (camex.ko, old kernels) would have
    every received BULK super-packet cut in Python: the client's INIT does
    not announce BULK, so the server sends it per-packet DATA."""
    from camex.v2 import kdf, wire
    from camex.v2.server import V2Server

    daemon, tun, transport, links = running(
        ["-M", "client", "-l", "10.0.0.2/24", "-s", "10.250.0.1", "-p", "7000",
         "--protocol", "v2", "-e", "-k", "demo-global-secret"])
    assert not getattr(tun, "offload", False)
    init = recv(transport.servers[0])
    assert init[:2] == bytes([wire.MARK, wire.T_INIT])
    requests = []
    psk = kdf.derive_psk(b"demo-global-secret", None)
    server = V2Server(lambda cid: psk,
                      lambda cid, req: requests.append(req) or wire.Refusal(wire.ERR_CONFIG, "-"))
    server.receive(init, ("192.0.2.1", 4000), 0.0)
    assert len(requests) == 1, "the server could not read the client's INIT"
    assert requests[0].local_cidr == ipaddress.IPv4Interface("10.0.0.2/24")
    assert not requests[0].features & wire.FEATURE_BULK


@pytest.mark.parametrize("gap", [0.0, 1e9], ids=["lone-packet-path", "burst-path"])
def test_a_fault_on_a_tun_packet_costs_that_packet_not_the_daemon(running, monkeypatch, caplog,
                                                                  gap):
    """Should handling a packet from the TUN raise (a bug), the daemon logs
    one warning per kind of fault, saying where, and goes on with the next
    packets, as for datagrams (camex.base.log.fault)."""
    import camex.daemon.client as cd
    from camex.base import log
    monkeypatch.setattr(cd, "BURST_GAP", gap)
    monkeypatch.setattr(log, "_FAULTS", log.Throttle(rate=1, burst=5))  # this test's own
    daemon, tun, transport, links = running(
        ["-M", "client", "-l", "10.0.0.2/24", "-s", "10.250.0.1", "-p", "7000",
         "--protocol", "legacy"])
    server = transport.servers[0]
    assert recv(server) == b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n"
    real = daemon.core.tun_packet

    def buggy(packet, now):
        if b"boom" in bytes(packet):
            raise IndexError("index out of range")
        real(packet, now)

    daemon.core.tun_packet = buggy
    good = [ip_packet("10.0.0.2", "10.0.0.3", b"good-%d" % i) for i in range(3)]
    with caplog.at_level("WARNING", logger="camex"):
        for p in (good[0], ip_packet("10.0.0.2", "10.0.0.3", b"boom"), good[1],
                  ip_packet("10.0.0.2", "10.0.0.3", b"boom!"), good[2]):
            tun.peer.send(p)
        assert [recv(server) for _ in good] == good
    faults = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert len(faults) == 1, faults
    assert faults[0].startswith("internal error on a packet from the TUN: IndexError: "
                                "index out of range at ")
    assert "test_client_daemon_fakes.py:" in faults[0]
    assert daemon.loop is not None and not daemon.loop.stopping


class _TwoFamilies(FakeTransport):
    """A server name with an AAAA and an A record; `unreachable` lists the
    addresses whose connect() fails as a family without a route does."""

    def __init__(self, unreachable=()):
        super().__init__()
        self.unreachable = set(unreachable)
        self.tried = []

    def resolve(self, host, port):
        return [("2001:db8::1", port), ("192.0.2.1", port)]

    def connect(self, server, bind_ip=None, bind_dev=None):
        self.tried.append(server[0])
        if server[0] in self.unreachable:
            raise OSError(101, "Network is unreachable")   # ENETUNREACH
        return super().connect(server, bind_ip, bind_dev)


@pytest.mark.parametrize("unreachable, server, mtu", [
    ((), "[2001:db8::1]:7000", 1452),                 # IPv6 connects: the IPv6 MTU
    (("2001:db8::1",), "192.0.2.1:7000", 1472)])      # no IPv6 route: the A record
def test_client_takes_the_first_server_address_that_connects(unreachable, server, mtu):
    tun, transport, links = FakeTun(), _TwoFamilies(unreachable), []

    def link(name):
        links.append(FakeLink(name))
        return links[-1]

    io = ClientIO(open_tun=lambda path: tun, link=link, resolve=transport.resolve,
                  connect=transport.connect, prepare_interface=lambda name: None, signals=False)
    opts = parse_args(["-M", "client", "-l", "10.0.0.2/24", "-s", "server.example",
                       "-p", "7000", "--protocol", "legacy"])
    opts.control_socket = ""
    daemon = ClientDaemon(opts, io)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (transport.servers and links and links[0].applied and
                   links[0].applied[-1].mtu == mtu) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert transport.tried == ["2001:db8::1"] + (["192.0.2.1"] if unreachable else [])
        assert links[0].applied[-1].mtu == mtu
        assert recv(transport.servers[0]) == b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n"
        assert daemon.status()["server"] == server
    finally:
        daemon.loop.stop()
        thread.join(5)

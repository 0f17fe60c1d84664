"""The server daemon's event loop through its ServerIO seam: the in-memory
TUN and link of camex.testing.fakes and a UDP socket on the loopback, so
the daemon's own code (receive loop, flush, TUN reads) runs without root
or namespaces, as the client's does in test_client_daemon_fakes.py."""

import ipaddress
import socket
import threading
import time

import pytest

from camex.daemon.options import parse_args
from camex.daemon.server import ServerDaemon, ServerIO
from camex.io import udp
from camex.legacy import codec
from camex.testing.fakes import FakeLink, FakeTun


def ip_packet(src, dst, payload=b"through-the-server-tun"):
    total = 20 + len(payload)
    return (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0])
            + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + payload)


def wait_for(cond, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def server(tmp_path):
    tun, links, started = FakeTun(), [], []

    def link(name):
        links.append(FakeLink(name))
        return links[-1]

    io = ServerIO(open_tun=lambda path: tun, link=link,
                  bind=lambda port, ip, dev: udp.server_socket(0, "127.0.0.1"),
                  prepare_interface=lambda name: None, signals=False)
    opts = parse_args(["-M", "server", "-p", "7000", "--server-tun", "-l", "10.0.0.1/24",
                       "--state-dir", str(tmp_path)])
    opts.control_socket = ""   # no socket in /run for a unit test
    daemon = ServerDaemon(opts, lambda: None, io)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    started.append((daemon, thread))
    wait_for(lambda: daemon.sock is not None and daemon.tun is not None, "the server to listen")
    yield daemon, tun, links
    daemon.loop.stop()
    thread.join(5)
    assert not thread.is_alive()


def test_server_relays_between_a_client_and_its_own_tun(server):
    daemon, tun, links = server
    assert [str(c.address) for c in links[0].applied] == ["10.0.0.1/24"]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.connect(daemon.sock.getsockname())
    client.send(codec.register_manual("10.0.0.2"))   # a plaintext legacy camera
    up = ip_packet("10.0.0.2", "10.0.0.1")
    tun.peer.settimeout(5)
    # The REGISTER may still be on its way: DATA before it is dropped, so resend.
    got = None
    for _ in range(50):
        client.send(up)
        try:
            tun.peer.settimeout(0.1)
            got = tun.peer.recv(65535)
            break
        except socket.timeout:
            continue
    assert got == up
    down = ip_packet("10.0.0.1", "10.0.0.2")
    tun.peer.send(down)
    assert client.recv(65535) == down
    # A packet for no client is dropped and counted, and the loop goes on.
    tun.peer.send(ip_packet("10.0.0.1", "10.0.0.9"))
    tun.peer.send(down)
    assert client.recv(65535) == down
    assert daemon.status()["drops"].get("no-route", 0) >= 1
    client.close()


def encrypted_server(tmp_path, batched: bool):
    io = ServerIO(bind=lambda port, ip, dev: udp.server_socket(0, "127.0.0.1"),
                  signals=False, batched=batched)
    opts = parse_args(["-M", "server", "-p", "7000", "-e", "-k", "fleet-secret",
                       "--state-dir", str(tmp_path)])
    opts.control_socket = ""
    daemon = ServerDaemon(opts, lambda: None, io)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    wait_for(lambda: daemon.sock is not None and daemon.sender is not None, "the server")
    return daemon, thread


@pytest.mark.parametrize("batched", [True, False])
def test_a_burst_from_many_cameras_reaches_each_destination_once(tmp_path, batched):
    """Eight encrypted cameras, each sending to the next one, in bursts the
    server takes with recvmmsg (or, `batched` off, one read at a time):
    every DATA arrives once, at the right camera, sealed for it; a replay
    of the whole burst relays nothing."""
    from camex.base.aead import ChaCha20Poly1305
    daemon, thread = encrypted_server(tmp_path, batched)
    try:
        aead = ChaCha20Poly1305(codec.derive_key(b"fleet-secret"))
        server = daemon.sock.getsockname()
        cams = []
        for i in range(8):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            cams.append((s, f"10.0.0.{i + 2}", bytes([9, 9, 9, i])))
        for s, ip, prefix in cams:
            s.sendto(codec.seal(aead, codec.T_REGISTER, prefix, 1, codec.register_manual(ip)),
                     server)
        wait_for(lambda: len(daemon.core.legacy.by_endpoint) == 8, "eight registrations")
        burst, expected = [], {ip: [] for _, ip, _ in cams}
        for k in range(40):
            for i, (s, ip, prefix) in enumerate(cams):
                dst = cams[(i + 1) % 8][1]
                inner = ip_packet(ip, dst, b"frame %d " % k + bytes(1100))
                expected[dst].append(inner)
                burst.append((s, codec.seal(aead, codec.T_DATA, prefix, 2 + k, inner)))
        for s, d in burst + burst:          # the second copy is a replay
            s.sendto(d, server)
        got = {ip: [] for _, ip, _ in cams}
        for s, ip, _ in cams:
            s.settimeout(2)
            try:
                while len(got[ip]) < 41:
                    d = s.recv(65535)
                    s.settimeout(0.3)
                    got[ip].append(codec.open_datagram(aead, d, codec.parse_header(d)))
            except socket.timeout:
                pass
        assert got == expected
        assert daemon.core.drops()["replay"] == 320
        assert (daemon._batch is not None) == batched
        if batched:    # some receives took several cameras' datagrams at once
            assert daemon._batch.received > daemon._batch.calls > 0
    finally:
        daemon.loop.stop()
        thread.join(5)
        for s, _, _ in cams:
            s.close()


@pytest.mark.parametrize("gap", [0.0, 1e9], ids=["lone-datagram-path", "burst-path"])
def test_a_v2_client_and_the_server_tun_exchange_the_same_packets_lone_or_in_bursts(
        tmp_path, monkeypatch, gap):
    """BURST_GAP 0: every readiness event of the server's socket is a lone
    datagram (one read, the core's flat path entered by `one`, flushed at
    once); 1e9: every one is a burst (recvmmsg, batches). A v2 client and
    the server's own TUN exchange 150 packets each way, and garbage from a
    stranger in between: the same packets arrive, in order, either way."""
    import camex.daemon.server as sd
    from camex.v2.core import V2ClientCore

    monkeypatch.setattr(sd, "BURST_GAP", gap)
    tun = FakeTun()
    io = ServerIO(open_tun=lambda path: tun, link=FakeLink,
                  bind=lambda port, ip, dev: udp.server_socket(0, "127.0.0.1"),
                  prepare_interface=lambda name: None, signals=False, batched=True)
    opts = parse_args(["-M", "server", "-p", "7000", "--server-tun", "-l", "10.0.0.1/24",
                       "-e", "-k", "fleet-secret", "--state-dir", str(tmp_path)])
    opts.control_socket = ""
    daemon = ServerDaemon(opts, lambda: None, io)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: daemon.sock is not None and daemon.tun is not None, "the server")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.connect(daemon.sock.getsockname())
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        core = V2ClientCore(auto=False, passphrase=b"fleet-secret",
                            local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"))

        def pump(until):
            while not until():
                for d in core.to_net:
                    sock.send(d)
                core.to_net.clear()
                if until():
                    break
                core.datagram_received(sock.recv(65535), time.monotonic())

        core.start(time.monotonic())
        core.connected(time.monotonic())
        pump(lambda: core.established)
        tun.peer.settimeout(5)
        up = [ip_packet("10.0.0.2", "10.0.0.1", b"up-%03d" % i + bytes(i)) for i in range(150)]
        got = []
        for i, p in enumerate(up):
            core.tun_packet(p, time.monotonic())
            for d in core.to_net:
                sock.send(d)
            core.to_net.clear()
            if i % 50 == 25:
                stranger.sendto(b"\xc2\x04" + bytes(40), daemon.sock.getsockname())
            if gap == 0.0:
                # Each is written out at once, not with a later wake-up's
                # flush (the loop sleeps up to 1 s).
                tun.peer.settimeout(0.5)
                got.append(tun.peer.recv(65535))
        tun.peer.settimeout(5)
        got += [tun.peer.recv(65535) for _ in up[len(got):]]
        assert got == up
        down = [ip_packet("10.0.0.1", "10.0.0.2", b"dn-%03d" % i + bytes(i)) for i in range(150)]
        for p in down:
            tun.peer.send(p)
        got = []
        while len(got) < len(down):
            core.datagram_received(sock.recv(65535), time.monotonic())
            got += [bytes(p) for p in core.to_tun]
            core.to_tun.clear()
        assert got == down
        assert daemon.status()["clients"][0]["rx_packets"] >= 150
    finally:
        daemon.loop.stop()
        thread.join(5)
    assert not thread.is_alive()

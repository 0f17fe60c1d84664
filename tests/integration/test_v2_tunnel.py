"""v2 tunnels in the namespace lab: manual and auto clients, the
global and per-client passphrases, the server as a host on the tunnel
(--server-tun), and the mix with the legacy protocol on one port.

Clients run with the same command line as against a legacy server (-e -k,
no --protocol): that they speak v2 is read from `camex status --json` of
both clients and of the server."""

import pytest

from camex.daemon.status import format_status
from camex.io.cpu import hardware_aes
from lab.attacks import Sniffer
from lab.daemons import auto_config
from lab.traffic import iperf3
from lab.v2lab import GLOBAL, PER_CLIENT, V2Camex, log_time, pings

pytestmark = pytest.mark.lab


@pytest.fixture
def cx(star):
    return V2Camex(star)


def config_text(per_client: bool) -> str:
    clients = {}
    for cid, ip in (("C1", "10.0.0.2"), ("C2", "10.0.0.3")):
        keys = {"local_cidr": f"{ip}/24"}
        if per_client:
            keys["psk"] = PER_CLIENT[cid]
        clients[cid] = keys
    return auto_config(clients)


def start(cx, star, mode: str, keys: str):
    """Server + C1 + C2 with v2; returns (server, c1, c2).

    keys "global": every client uses the server's -k; "per-client": each
    has its own psk= in its [client ID] section and the server has no
    global passphrase at all."""
    per_client = keys == "per-client"
    # Manual clients with the global passphrase carry no ID: the server
    # needs no configuration file (an address pinned to a [client ID]
    # section would be refused to a client without that ID).
    config = (None if mode == "manual" and not per_client
              else cx.write_config(config_text(per_client)))
    srv = cx.start_server(encrypt=not per_client, psk=None if per_client else GLOBAL,
                          config=config)
    procs = []
    for ns in (star.c1, star.c2):
        psk = PER_CLIENT[ns.client_id] if per_client else GLOBAL
        if mode == "auto":
            procs.append(cx.start_client(ns, wait=False, auto=True, encrypt=True, psk=psk))
        else:
            # A manual client names itself (-n) only where its own
            # passphrase needs an ID to be found.
            extra = ["-n", ns.client_id] if per_client else []
            procs.append(cx.start_client(ns, wait=False, encrypt=True, psk=psk, extra=extra))
    for p in procs:
        cx.wait_client(p)
    return (srv, *procs)


def assert_v2_everywhere(cx, star):
    for ns in (star.c1, star.c2):
        st = cx.status(ns)
        assert st["protocol"] == "v2", st
    clients = cx.clients()
    assert {a: c["protocol"] for a, c in clients.items()} == {"10.0.0.2": "v2", "10.0.0.3": "v2"}


@pytest.mark.parametrize("mode", ["manual", "auto"])
@pytest.mark.parametrize("keys", ["global", "per-client"])
def test_v2_tunnel_between_clients(cx, star, mode, keys, measure):
    srv, c1, c2 = start(cx, star, mode, keys)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    r = pings(star.c1, star.c2.tunnel_ip)
    pings(star.c2, star.c1.tunnel_ip)
    res = iperf3(star.c1, star.c2, star.c2.tunnel_ip, seconds=2)
    assert res.received_bytes > 1 << 20
    assert_v2_everywhere(cx, star)
    clients = cx.clients()
    if keys == "per-client":
        assert {c["key"] for c in clients.values()} == {"C1", "C2"}
    else:
        assert {c["key"] for c in clients.values()} == {"global"}
    assert {c["mode"] for c in clients.values()} == {mode}
    for proc in (srv, c1, c2):
        assert proc.running(), proc.tail()
        # Nothing per packet at the default level.
        assert len(proc.output().splitlines()) < 30, proc.tail(40)
    assert srv.count(r"client \S+ 10\.0\.0\.[23] at \S+ registered \(v2, " + mode) == 2
    measure(f"v2 {mode}/{keys}: iperf3 C1->C2 {res.gbps:.3f} Gbit/s "
            f"({res.retransmits} retransmits), ping rtt {r.rtt_avg_ms:.3f} ms")


def test_server_tun_makes_the_server_a_host(cx, star, measure):
    """--server-tun: the server owns 10.0.0.1 (the [defaults] gateway), the
    clients reach it and it reaches them; client-to-client relay still works."""
    config = cx.write_config(config_text(per_client=False))
    srv = cx.start_server(encrypt=True, psk=GLOBAL, config=config, extra=["--server-tun"])
    m = srv.wait_for_line(r"server TUN (\S+) address (\S+)", timeout=5)
    assert m.group(2) == "10.0.0.1/24"
    c1 = cx.start_client(star.c1, wait=False, auto=True, encrypt=True, psk=GLOBAL)
    c2 = cx.start_client(star.c2, wait=False, auto=True, encrypt=True, psk=GLOBAL)
    cx.wait_client(c1)
    cx.wait_client(c2)
    assert "10.0.0.1" in [str(a.ip) for a in star.server.addresses(m.group(1))]

    star.c1.wait_ping("10.0.0.1", timeout=10)
    r = pings(star.c1, "10.0.0.1")
    pings(star.server, star.c2.tunnel_ip)
    pings(star.c1, star.c2.tunnel_ip)

    res = iperf3(star.c1, star.server, "10.0.0.1", seconds=2)
    assert res.received_bytes > 1 << 20
    back = iperf3(star.server, star.c2, star.c2.tunnel_ip, seconds=2)
    assert back.received_bytes > 1 << 20
    assert_v2_everywhere(cx, star)
    measure(f"v2 --server-tun: iperf3 C1->server {res.gbps:.3f} Gbit/s, server->C2 "
            f"{back.gbps:.3f} Gbit/s, ping C1->server rtt {r.rtt_avg_ms:.3f} ms")


def test_a_passphrase_alone_means_v2(cx, star):
    """v2 needs a passphrase, not -e: with -k alone (legacy would run
    plaintext) both ends speak v2, the wire shows only v2 datagrams and
    status says encrypted."""
    cx.start_server(psk=GLOBAL)
    with Sniffer(star.server, "c1", cx.port) as sniff:
        cx.start_client(star.c1, psk=GLOBAL)
        cx.start_client(star.c2, psk=GLOBAL)
        star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
        pings(star.c1, star.c2.tunnel_ip, count=5)
        firsts = {p.payload[:1] for p in sniff.packets if p.src == "10.250.0.2"}
    assert firsts == {b"\xc2"}
    for ns in (star.c1, star.c2):
        st = cx.status(ns)
        assert (st["protocol"], st["encrypted"]) == ("v2", True), st
    assert {c["protocol"] for c in cx.clients().values()} == {"v2"}


def test_the_data_cipher_is_agreed_and_shown(cx, star):
    """Each session's AEAD is agreed in its handshake: AES-256-GCM where
    both ends have AES instructions (here one machine plays every end), and
    ChaCha20-Poly1305 for a client started with --cipher chacha20-poly1305,
    from the same server. Both carry traffic to each other; the clients'
    and the server's status name each session's cipher."""
    aes = "aes-256-gcm" if hardware_aes() else "chacha20-poly1305"
    cx.start_server(psk=GLOBAL)
    cx.start_client(star.c1, psk=GLOBAL)
    cx.start_client(star.c2, psk=GLOBAL, extra=["--cipher", "chacha20-poly1305"])
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    pings(star.c1, star.c2.tunnel_ip, count=5)
    res = iperf3(star.c1, star.c2, star.c2.tunnel_ip, seconds=1)
    assert res.received_bytes > 1 << 20
    st1 = cx.status(star.c1)
    assert st1["cipher"] == aes
    assert f"protocol: v2 (encrypted, {aes})" in format_status("c1", st1)
    assert cx.status(star.c2)["cipher"] == "chacha20-poly1305"
    by_address = {c["address"]: c["cipher"] for c in cx.clients().values()}
    assert by_address == {star.c1.tunnel_ip: aes, star.c2.tunnel_ip: "chacha20-poly1305"}


# ------------------------------------------------------------ mixed


def test_v2_and_legacy_clients_relay_to_each_other(cx, star, measure):
    srv = cx.start_server(encrypt=True, psk=GLOBAL)
    c1 = cx.start_client(star.c1, encrypt=True, psk=GLOBAL)
    c2 = cx.start_client(star.c2, encrypt=True, psk=GLOBAL, extra=["--protocol", "legacy"])
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    r = pings(star.c1, star.c2.tunnel_ip)
    pings(star.c2, star.c1.tunnel_ip)
    res = iperf3(star.c2, star.c1, star.c1.tunnel_ip, seconds=2)
    assert res.received_bytes > 1 << 20
    assert cx.status(star.c1)["protocol"] == "v2"
    assert cx.status(star.c2)["protocol"] == "legacy"
    assert {a: c["protocol"] for a, c in cx.clients().items()} == \
        {"10.0.0.2": "v2", "10.0.0.3": "legacy"}
    for p in (srv, c1, c2):
        assert p.running(), p.tail()
    measure(f"mixed: iperf3 legacy C2 -> v2 C1 {res.gbps:.3f} Gbit/s, "
            f"ping v2->legacy rtt {r.rtt_avg_ms:.3f} ms")


def test_no_legacy_server_refuses_legacy_client(cx, star):
    # --server-tun gives the v2 client something to reach besides C2.
    srv = cx.start_server(encrypt=True, psk=GLOBAL,
                          extra=["--no-legacy", "--server-tun", "-l", "10.0.0.1/24"])
    assert srv.find(r"listening on \S+ \(v2; ")
    cx.start_client(star.c1, encrypt=True, psk=GLOBAL)
    c2 = cx.start_client(star.c2, encrypt=True, psk=GLOBAL, extra=["--protocol", "legacy"])
    srv.wait_for_line(r"refused legacy-protocol datagrams from 10\.250\.1\.2:\d+ \(--no-legacy\)",
                      timeout=10)
    star.c1.wait_ping("10.0.0.1", timeout=10)
    r = star.c1.ping(star.c2.tunnel_ip, count=5, interval=0.1, wait=0.5)
    assert r.received == 0, r.output
    clients = cx.clients()
    assert list(clients) == ["10.0.0.2"] and clients["10.0.0.2"]["protocol"] == "v2"
    assert cx.server_drops().get("legacy-refused", 0) > 0
    assert c2.running()
    # The same client with the default protocol gets in at once.
    c2.stop()
    cx.start_client(star.c2, encrypt=True, psk=GLOBAL)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    assert cx.clients()["10.0.0.3"]["protocol"] == "v2"


def test_auto_client_falls_back_to_a_legacy_server(cx, star, measure):
    srv = cx.start_server(encrypt=True, psk=GLOBAL, extra=["--protocol", "legacy"])
    c1 = cx.start_client(star.c1, encrypt=True, psk=GLOBAL)
    c2 = cx.start_client(star.c2, encrypt=True, psk=GLOBAL)
    for p in (c1, c2):
        p.wait_for_line(r"no v2 answer from the server in 3 s: using the legacy protocol",
                        timeout=10)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    pings(star.c1, star.c2.tunnel_ip)
    for ns in (star.c1, star.c2):
        assert cx.status(ns)["protocol"] == "legacy"
    assert {c["protocol"] for c in cx.clients().values()} == {"legacy"}
    assert srv.running()
    took = log_time(c1, r"no v2 answer") - log_time(c1, r"client ")
    measure(f"auto -> legacy server: fallback after {took:.1f} s from the client's start")


def test_auto_configuration_travels_encrypted(cx, star):
    """The auto-mode profile (address, gateway, routes, MTU) reaches the
    client inside the handshake's encrypted RESP: on the wire there is no
    trace of it, neither as legacy CONFIG text nor as v2 TLV bytes."""
    config = cx.write_config(config_text(per_client=False))
    cx.start_server(encrypt=True, psk=GLOBAL, config=config)
    with Sniffer(star.c1, "eth0", cx.port) as sniff:
        c1 = cx.start_client(star.c1, auto=True, encrypt=True, psk=GLOBAL)
        assert "route 10.251.0.0/24" in c1.find(r"tunnel up: .*").group(0)
        star.c1.wait_ping("10.0.0.2", timeout=2)
        got = [p.payload for p in sniff.packets if p.src == "10.250.0.1"]
    resps = [p for p in got if p[:2] == b"\xc2\x02"]
    assert resps, got
    secrets = [b"10.251.0.0", b"10.0.0.2/24", bytes([4, 5, 10, 251, 0, 0, 24]),
               bytes([3, 4, 10, 0, 0, 1]), bytes([2, 5, 10, 0, 0, 2, 24])]
    for p in got:
        for s in secrets:
            assert s not in p, (s, p.hex())

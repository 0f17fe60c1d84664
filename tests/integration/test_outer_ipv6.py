"""camex over IPv6 between the peers (the outer path), in the namespace lab.

- An IPv6-only underlay (no IPv4 address on any veth): v2, legacy
  encrypted and legacy plaintext clients reach each other through the
  tunnel; the TUN MTU is the IPv6 default; `camex status` (JSON and text)
  shows the bracketed endpoint.
- A dual-stack underlay with the server's default socket (:: and 0.0.0.0
  at once): a model of the deployed IPv4-only C client (lab/cclient.py)
  and a camex v2 client over IPv6 are served together and reach each other.
- A v2 client whose server name has A and AAAA records loses its IPv4
  address: it moves to its IPv6 endpoint within the same session (no new
  handshake) and its ping goes on.
- The fast path over IPv6: TCP through a v2 tunnel travels as BULK frames
  (UDP GSO sends, GRO receives), with no IPv6 fragment on the underlay.
"""

import re
import socket
import subprocess

import pytest

from lab.cclient import CClient
from lab.daemons import Camex, GLOBAL_PSK, auto_config, vectors_config
from lab.faults import tcp_transfer
from lab.netns import PORT, PointToPoint, wait_until
from lab.v2lab import GLOBAL, V2Camex

from camex.io import gso
from camex.v2 import wire

pytestmark = pytest.mark.lab

SERVER_NAME = "camex-server.lab"
CONFIG = {"C1": {"local_cidr": "10.0.0.2/24"}, "C2": {"local_cidr": "10.0.0.3/24"}}


def endpoint(ns, port: int) -> str:
    return f"[{ns.underlay6}]:{port}"


def test_the_ipv6_underlay_has_no_ipv4_address(star6):
    for ns in (star6.server, star6.c1, star6.c2):
        four = [a for a in ns.addresses() if not a.ip.is_loopback]
        six = [a for a in ns.addresses(family=socket.AF_INET6) if a.ip.is_private
               and not a.ip.is_link_local and not a.ip.is_loopback]
        assert four == [] and six, (ns, four, six)
    assert star6.c1.server_ip == "fd00:250::1" and star6.c1.underlay == "fd00:250::2"
    star6.c1.wait_ping(star6.c1.server_ip)


def test_v2_over_ipv6_only(star6):
    cx = V2Camex(star6)
    cx.start_server(encrypt=True, psk=GLOBAL, config=cx.write_config(auto_config(CONFIG)),
                    extra=["--server-tun"])
    procs = [cx.start_client(ns, wait=False, auto=True, encrypt=True, psk=GLOBAL)
             for ns in (star6.c1, star6.c2)]
    for p in procs:
        cx.wait_client(p)
    star6.c1.wait_ping(star6.c2.tunnel_ip)
    star6.c2.wait_ping("10.0.0.1")
    assert star6.c1.ping(star6.c2.tunnel_ip, count=5, interval=0.05).received == 5
    clients = cx.clients()
    for ns in (star6.c1, star6.c2):
        c = clients[ns.tunnel_ip]
        st = cx.status(ns)
        assert c["protocol"] == "v2"
        # The server's view and the client's: bracketed IPv6 endpoints.
        assert c["endpoint"] == endpoint(ns, st["local_port"])
        assert st["server"] == f"[{ns.server_ip}]:{PORT}"
        # The IPv6 default: 1500 - 40 - 8 - 34 (v2) = 1418.
        assert st["mtu"] == 1418
        assert star6.c1.links()[cx.tun_dev(procs[0])]["mtu"] == 1418
    text = subprocess.run([cx.binary, "status", "--control-socket",
                           cx.control_socket(star6.server)], capture_output=True, text=True,
                          timeout=10).stdout
    c1_ep = endpoint(star6.c1, cx.status(star6.c1)["local_port"])
    assert f"endpoint: {c1_ep}" in text, text
    prom = subprocess.run([cx.binary, "status", "--prometheus", "--control-socket",
                           cx.control_socket(star6.server)], capture_output=True, text=True,
                          timeout=10).stdout
    assert f'endpoint="{c1_ep}"' in prom, prom


@pytest.mark.parametrize("encrypt, mtu", [(True, 1409), (False, 1452)])
def test_legacy_over_ipv6_only(star6, encrypt, mtu):
    cx = V2Camex(star6, protocol="legacy")
    psk = "legacy-v6-secret" if encrypt else None
    srv = cx.start_server(encrypt=encrypt, psk=psk, extra=["--protocol", "legacy"])
    procs = [cx.start_client(ns, wait=False, encrypt=encrypt, psk=psk)
             for ns in (star6.c1, star6.c2)]
    for p in procs:
        cx.wait_client(p)
    star6.c1.wait_ping(star6.c2.tunnel_ip)
    assert star6.c2.ping(star6.c1.tunnel_ip, count=5, interval=0.05).received == 5
    for ns, p in zip((star6.c1, star6.c2), procs):
        assert ns.links()[cx.tun_dev(p)]["mtu"] == mtu
        st = cx.status(ns)
        assert st["protocol"] == "legacy" and st["mtu"] == mtu
        assert cx.clients()[ns.tunnel_ip]["endpoint"] == endpoint(ns, st["local_port"])
    assert srv.find(r"listening on \[::\]:7000 \(.*\), IPv6 and IPv4$") is not None, srv.tail()


def test_dual_stack_server_serves_an_ipv4_c_client_and_an_ipv6_camex_client(star46):
    cx = V2Camex(star46)
    psk = "dual-stack-secret"
    cx.start_server(encrypt=True, psk=psk)
    # C2: camex, v2 over IPv6.
    c2 = cx.start_client(star46.c2, encrypt=True, psk=psk, server=star46.c2.server_ip6)
    # C1: the deployed C client's model, IPv4 only, manual 10.0.0.2.
    model = CClient(lambda: star46.c1.socket(socket.AF_INET, socket.SOCK_DGRAM),
                    (star46.c1.server_ip4, PORT), psk.encode(), local_ip="10.0.0.2").start()
    try:
        wait_until(lambda: "10.0.0.2" in cx.clients() or None, 10, "the C client registered")
        clients = cx.clients()
        st2 = cx.status(star46.c2)
        assert clients["10.0.0.2"]["protocol"] == "legacy"
        assert clients["10.0.0.2"]["endpoint"].startswith(f"{star46.c1.underlay4}:")
        assert clients["10.0.0.3"]["protocol"] == "v2"
        assert clients["10.0.0.3"]["endpoint"] == endpoint(star46.c2, st2["local_port"])
        # camex (IPv6) -> C client (IPv4): the model answers echo requests.
        star46.c2.wait_ping("10.0.0.2")
        # C client -> camex: its echo request is answered through the tunnel.
        sent = []

        def answered():
            sent.append(len(sent))
            model.ping("10.0.0.3", 0x77, sent[-1])
            return any(ident == 0x77 for ident, _seq in model.replies) or None
        wait_until(answered, 10, "the C client's ping answered", interval=0.2)
    finally:
        model.stop()
    assert c2.running()


def test_v2_client_moves_from_its_ipv4_to_its_ipv6_endpoint(star46):
    cx = V2Camex(star46)
    cx.start_server(encrypt=True, psk=GLOBAL)
    c1, c2 = star46.c1, star46.c2
    # C1 knows the server by name, A and AAAA, and has only IPv4 at first:
    # the IPv6 address does not connect (no route), the IPv4 one does.
    c1.del_address("eth0", f"{c1.underlay6}/64")
    proc = cx.start_client(c1, encrypt=True, psk=GLOBAL, server=SERVER_NAME,
                           hosts={SERVER_NAME: [c1.server_ip4, c1.server_ip6]})
    cx.start_client(c2, encrypt=True, psk=GLOBAL)
    c1.wait_ping(c2.tunnel_ip)
    before = cx.clients()["10.0.0.2"]
    assert before["endpoint"].startswith(f"{c1.underlay4}:"), before
    handshakes = cx.status(c1)["handshakes"]
    pinger = c1.spawn(["ping", "-n", "-i", "0.05", c2.tunnel_ip], name="ping")
    # C1 gains IPv6 and loses IPv4.
    c1.add_address("eth0", f"{c1.underlay6}/64")
    c1.wait_address(c1.underlay6, "eth0")
    c1.del_address("eth0", f"{c1.underlay4}/24")
    wait_until(lambda: cx.clients()["10.0.0.2"]["endpoint"].startswith("[") or None, 10,
               "the server follows C1 to its IPv6 endpoint")
    st = cx.status(c1)
    assert cx.clients()["10.0.0.2"]["endpoint"] == endpoint(c1, st["local_port"])
    assert st["server"] == f"[{c1.server_ip6}]:{PORT}"
    # The same session: no new handshake, as after any roam.
    assert st["handshakes"] == handshakes
    assert c1.ping(c2.tunnel_ip, count=5, interval=0.05).received == 5
    # Over IPv6 the TUN takes the IPv6 default MTU.
    assert st["mtu"] == 1418
    pinger.stop()
    assert "server unreachable from this socket" in proc.output()


def test_bulk_over_ipv6_uses_the_fast_path(star6, measure):
    cx = V2Camex(star6)
    srv = cx.start_server(encrypt=True, psk=GLOBAL, config=cx.write_config(auto_config(CONFIG)),
                          extra=["--server-tun"])
    procs = [cx.start_client(ns, wait=False, auto=True, encrypt=True, psk=GLOBAL)
             for ns in (star6.c1, star6.c2)]
    for p in procs:
        cx.wait_client(p)
    star6.c1.wait_ping("10.0.0.1")
    star6.c2.wait_ping("10.0.0.1")
    size = 8 << 20
    frags = {ns.role: ns.snmp6().get("Ip6FragCreates", 0) for ns in (star6.server, star6.c1)}
    before = {a: c["bulk_rx_frames"] for a, c in cx.clients().items()}
    up = tcp_transfer(star6.c1, star6.server, "10.0.0.1", size)
    assert up["ok"] and up["bytes"] == size, up
    relay = tcp_transfer(star6.c1, star6.c2, star6.c2.tunnel_ip, size, port=5303)
    assert relay["ok"] and relay["bytes"] == size, relay
    after = cx.clients()
    assert after["10.0.0.2"]["bulk_rx_frames"] > before["10.0.0.2"]
    assert after["10.0.0.3"]["bulk_tx_frames"] > 0
    assert cx.status(star6.c2)["bulk_rx_frames"] > 0
    # BULK fragments fit a 1500-byte IPv6 path: the kernel fragmented
    # nothing, and UDP GSO stayed on (it cannot fragment).
    for ns in (star6.server, star6.c1):
        assert ns.snmp6().get("Ip6FragCreates", 0) == frags[ns.role]
    for p in [srv, *procs]:
        out = p.output()
        assert "UDP GSO on" in out and "UDP GSO refused" not in out, p.tail(20)
    assert wire.bulk_tso_max(1452) < wire.bulk_tso_max(1472)
    measure(f"BULK over IPv6: {size >> 20} MiB C1->server "
            f"{size / up['seconds'] / 1e6 * 8:.0f} Mbit/s, C1->C2 relay "
            f"{size / relay['seconds'] / 1e6 * 8:.0f} Mbit/s")


def test_an_ipv6_path_limit_leaves_ipv4_peers_their_gso(tmp_path):
    """A run of 1472-byte datagrams fits an IPv4 path but not an IPv6 one
    (EMSGSIZE: GSO cannot fragment): the dual-stack socket's sender then
    sends such runs one by one to IPv6 peers only, and IPv4 peers keep one
    sendmsg per run."""
    with PointToPoint(logdir=str(tmp_path), family="dual") as lab:
        srv = lab.a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.bind(("::", 0))
        peers = {}
        for family, host in ((socket.AF_INET, lab.b.underlay4), (socket.AF_INET6, lab.b.underlay6)):
            r = lab.b.socket(family, socket.SOCK_DGRAM)
            r.bind((host, 0))
            r.settimeout(2)
            peers[family] = r
        assert gso.probe().udp_gso
        sender = gso.Sender(srv, True, None, gso.sockaddr_for(srv))
        run = [bytes([i]) * 1472 for i in range(4)]
        v6 = peers[socket.AF_INET6].getsockname()[:2]
        v4 = peers[socket.AF_INET].getsockname()[:2]
        sender.send_grouped([(d, v6) for d in run])
        assert sender.max_sizes == [65535, 1471]
        got = [peers[socket.AF_INET6].recv(2000) for _ in run]   # fragmented, reassembled
        assert got == run
        before = sender.sends
        sender.send_grouped([(d, v4) for d in run])
        assert sender.sends == before + 1            # one GSO sendmsg for the run
        assert [peers[socket.AF_INET].recv(2000) for _ in run] == run
        for r in peers.values():
            r.close()
        srv.close()


def _ping_df(ns, dst, size):
    r = ns.run(["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", str(size), dst], timeout=10)
    return r.returncode, r.stdout + r.stderr


def _fragments(lab) -> int:
    """IPv6 fragments made or reassembled anywhere on the underlay."""
    return sum(ns.snmp6().get("Ip6FragCreates", 0) + ns.snmp6().get("Ip6ReasmReqds", 0)
               for ns in (lab.server, *lab.clients))


@pytest.mark.parametrize("encrypt, auto, protocol, mtu", [
    (False, False, "legacy", 1452), (True, True, "legacy", 1409),
    (True, False, "v2", 1418), (True, True, "v2", 1418)],
    ids=["plaintext-manual", "encrypted-auto-mtu1500", "v2-manual", "v2-auto-mtu1500"])
def test_mtu_over_ipv6_full_size_unfragmented_and_oversize_answered(star6, encrypt, auto,
                                                                    protocol, mtu):
    """As the IPv4 MTU test (test_fault_network): over an IPv6 underlay the
    TUN MTU leaves room for the 40-byte IPv6 header too, also when the
    server offers mtu=1500; full-size DF packets and a TCP transfer cross
    without an IPv6 fragment anywhere, one byte more is refused locally
    with the TUN's MTU."""
    lab = star6
    cx = Camex(lab, protocol=protocol)
    psk = GLOBAL_PSK if encrypt else None
    config = cx.write_config(vectors_config(c2_psk=None)) if auto else None
    cx.start_server(encrypt=encrypt, psk=psk, config=config)
    for ns in lab.clients:
        cx.start_client(ns, encrypt=encrypt, psk=psk, auto=auto)
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    assert cx.status(lab.c1)["mtu"] == mtu and cx.status(lab.c1)["protocol"] == protocol
    before = _fragments(lab)
    for src, dst in ((lab.c1, "10.0.0.3"), (lab.c2, "10.0.0.2")):
        rc, out = _ping_df(src, dst, mtu - 28)
        assert rc == 0, out
    xfer = tcp_transfer(lab.c1, lab.c2, "10.0.0.3", 1 << 20, timeout=15)
    assert xfer["ok"], xfer
    assert _fragments(lab) == before, "full-size packets were fragmented on the IPv6 underlay"
    rc, local = _ping_df(lab.c1, "10.0.0.3", mtu - 27)
    assert rc != 0 and re.search(rf"message too long, mtu={mtu}", local), local


def test_server_bound_to_one_ipv6_address_serves_that_address_only(star46):
    cx = V2Camex(star46)
    c1, c2 = star46.c1, star46.c2
    srv = cx.start_server(encrypt=True, psk=GLOBAL, extra=["-b", c1.server_ip6])
    assert srv.find(rf"listening on \[{c1.server_ip6}\]:7000 \(") is not None, srv.tail()
    assert srv.find("IPv6 and IPv4") is None
    # A bracketed literal on the client's command line.
    cx.start_client(c1, encrypt=True, psk=GLOBAL, server=f"[{c1.server_ip6}]")
    wait_until(lambda: "10.0.0.2" in cx.clients() or None, 10, "C1's session")
    assert cx.status(c1)["server"] == f"[{c1.server_ip6}]:{PORT}"
    assert list(cx.clients()) == ["10.0.0.2"]
    # The server's other addresses, IPv4 or IPv6, answer port unreachable.
    for family, host in ((socket.AF_INET, c2.server_ip4), (socket.AF_INET6, c2.server_ip6)):
        s = c2.socket(family, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.connect((host, PORT))
        s.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)
        s.close()

"""IPv6 inside v2 tunnels in the namespace lab (IPv4 underlay): two
clients and the server's TUN reach each other with ping -6 through the
relay; auto clients, one IPv6-only and one dual-stack, get their
addresses and routes on their TUNs from the server; a client sending from
an IPv6 source it does not own is dropped and counted; an IPv6 packet for
a legacy client is dropped and counted; TCP over IPv6 travels through the
relay in BULK frames and reaches the receiving TUN as GSO_TCPV6 writes,
and moves the same bytes with TSO6 off (CAMEX_FASTPATH=notso6)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from lab.daemons import auto_config
from lab.faults import tcp_transfer
from lab.traffic import iperf3
from lab.proc import wait_until
from lab.v2lab import GLOBAL, V2Camex

pytestmark = pytest.mark.lab

AF_INET6 = 10
ETH_P_IPV6 = 0x86DD
IFA_F_NODAD = 0x02
V6 = {"srv": "fd00:c::1", "c1": "fd00:c::2", "c2": "fd00:c::3"}


@pytest.fixture
def cx(star):
    return V2Camex(star)


def v6_addresses(ns, ifname) -> set:
    with ns.ipr() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        return {f"{a.get('address')}/{a['prefixlen']}"
                for a in ipr.get_addr(family=AF_INET6, index=idx)}


def v6_routes(ns, ifname) -> set:
    with ns.ipr() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        return {f"{r.get('dst')}/{r['dst_len']}" for r in ipr.get_routes(family=AF_INET6)
                if r.get("oif") == idx and r.get("dst")}


def manual_v6(ns) -> list:
    return ["--protocol", "v2", "-l", f"{V6[ns.role]}/64"]


def ping6_ok(ns, dst, count=5):
    r = ns.ping(dst, count=count, interval=0.05, wait=2)
    assert r.ok and r.received == count, r.output
    return r


def test_two_v2_clients_and_the_server_tun_over_ipv6(cx, star):
    cx.start_server(psk=GLOBAL, extra=["--server-tun", "-l", "10.0.0.1/24",
                                       "-l", f"{V6['srv']}/64"])
    p1 = cx.start_client(star.c1, wait=False, psk=GLOBAL, extra=manual_v6(star.c1))
    p2 = cx.start_client(star.c2, wait=False, psk=GLOBAL, extra=manual_v6(star.c2))
    tun1, tun2 = cx.wait_client(p1), cx.wait_client(p2)
    assert f"{V6['c1']}/64" in v6_addresses(star.c1, tun1)
    assert f"{V6['c2']}/64" in v6_addresses(star.c2, tun2)
    star.c1.wait_ping(V6["c2"], timeout=10)
    ping6_ok(star.c1, V6["c2"])
    ping6_ok(star.c2, V6["c1"])
    ping6_ok(star.c1, V6["srv"])           # the server's own TUN, by its IPv6 address
    ping6_ok(star.c2, V6["srv"])
    ping6_ok(star.c1, star.c2.tunnel_ip)   # IPv4 beside it, unchanged
    res = iperf3(star.c1, star.c2, V6["c2"], seconds=2)   # TCP over IPv6 through the relay
    assert res.received_bytes > 1 << 20
    clients = {c["client_id"] or a: c for a, c in cx.clients().items()}
    assert {tuple(c["addresses"]) for c in clients.values()} == \
        {("10.0.0.2", V6["c1"]), ("10.0.0.3", V6["c2"])}


def test_auto_clients_ipv6_only_and_dual_stack(cx, star):
    text = auto_config(
        {"C1": {"local_cidr": f"{V6['c1']}/64"},
         "C2": {"local_cidr": [f"{star.c2.tunnel_ip}/24", f"{V6['c2']}/64"]}},
        defaults={"gateway_ip": ["10.0.0.1", V6["srv"]],
                  "route_cidr": ["10.251.0.0/24", "fd00:251::/48"]})
    cx.start_server(psk=GLOBAL, config=cx.write_config(text), extra=["--server-tun"])
    p1 = cx.start_client(star.c1, wait=False, auto=True, psk=GLOBAL)
    p2 = cx.start_client(star.c2, wait=False, auto=True, psk=GLOBAL)
    tun1, tun2 = cx.wait_client(p1), cx.wait_client(p2)
    # what the server pushed is on the TUNs: C1 IPv6 only, C2 both
    assert v6_addresses(star.c1, tun1) == {f"{V6['c1']}/64"}
    assert star.c1.addresses(tun1) == []
    assert "fd00:251::/48" in v6_routes(star.c1, tun1)
    assert v6_addresses(star.c2, tun2) == {f"{V6['c2']}/64"}
    assert [str(a) for a in star.c2.addresses(tun2)] == [f"{star.c2.tunnel_ip}/24"]
    assert "fd00:251::/48" in v6_routes(star.c2, tun2)
    st1 = cx.status(star.c1)
    assert st1["protocol"] == "v2" and st1["address6"] == f"{V6['c1']}/64"
    # traffic flows: between the two, and to the server's IPv6 gateway
    star.c1.wait_ping(V6["c2"], timeout=10)
    ping6_ok(star.c1, V6["c2"])
    ping6_ok(star.c2, V6["c1"])
    ping6_ok(star.c1, V6["srv"])
    ping6_ok(star.c2, "10.0.0.1")


def test_an_ipv6_source_the_client_does_not_own_is_dropped(cx, star):
    cx.start_server(psk=GLOBAL, extra=["--server-tun", "-l", "10.0.0.1/24",
                                       "-l", f"{V6['srv']}/64"])
    p1 = cx.start_client(star.c1, wait=False, psk=GLOBAL, extra=manual_v6(star.c1))
    p2 = cx.start_client(star.c2, wait=False, psk=GLOBAL, extra=manual_v6(star.c2))
    tun1 = cx.wait_client(p1)
    cx.wait_client(p2)
    star.c1.wait_ping(V6["c2"], timeout=10)
    # C1 puts C2's neighbour fd00:c::99 on its TUN and pings from it
    with star.c1.ipr() as ipr:
        idx = ipr.link_lookup(ifname=tun1)[0]
        ipr.addr("add", index=idx, address="fd00:c::99", prefixlen=128, flags=IFA_F_NODAD)
    before = cx.server_drops().get("v2-spoofed", 0)
    r = star.c1.ping(V6["c2"], count=5, interval=0.05, wait=1, extra=["-I", "fd00:c::99"])
    assert r.received == 0, r.output
    wait_until(lambda: cx.server_drops().get("v2-spoofed", 0) >= before + 5, 5,
               "spoofed drops counted")
    c1 = next(c for c in cx.clients().values() if c["address"] == star.c1.tunnel_ip)
    assert c1["spoofed"] >= 5
    # from its own address, the same client still gets through
    r = star.c1.ping(V6["c2"], count=5, interval=0.05, wait=2, extra=["-I", V6["c1"]])
    assert r.received == 5, r.output


def ipv6_udp(src: str, dst: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    return (struct.pack("!IHBB", 6 << 28, len(udp), 17, 64)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + udp)


def test_an_ipv6_packet_for_a_legacy_client_is_dropped_and_counted(cx, star):
    cx.start_server(psk=GLOBAL, encrypt=True)
    p1 = cx.start_client(star.c1, wait=False, encrypt=True, psk=GLOBAL,
                         extra=manual_v6(star.c1))
    p2 = cx.start_client(star.c2, wait=False, encrypt=True, psk=GLOBAL,
                         extra=["--protocol", "legacy"])
    tun1 = cx.wait_client(p1)
    cx.wait_client(p2)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    protos = {a: c["protocol"] for a, c in cx.clients().items()}
    assert protos == {"10.0.0.2": "v2", "10.0.0.3": "legacy"}
    rx_before = cx.status(star.c2)["rx_packets"]
    # IPv6 packets whose destination is the legacy client's IPv4 address,
    # mapped and compatible, written into C1's TUN as its stack would
    s = star.c1.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
    try:
        for dst in ("::ffff:10.0.0.3", "::10.0.0.3"):
            s.sendto(ipv6_udp(V6["c1"], dst, b"for a legacy client"), (tun1, ETH_P_IPV6))
    finally:
        s.close()
    wait_until(lambda: cx.server_drops().get("v2-ipv6-to-legacy", 0) >= 2, 5,
               "IPv6-to-legacy drops counted")
    assert cx.status(star.c2)["rx_packets"] == rx_before
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=5)   # IPv4 to it still flows


# --- TCP over IPv6 in BULK frames ---------------------------------------------

BULK_BYTES = 16 << 20


def start_dual_stack(cx, star):
    cx.start_server(psk=GLOBAL)
    procs = [cx.start_client(ns, wait=False, psk=GLOBAL, extra=manual_v6(ns))   # (and its IPv4 -l)
             for ns in (star.c1, star.c2)]
    for p in procs:
        cx.wait_client(p)
    star.c1.wait_ping(V6["c2"], timeout=10)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    return procs


def frames_from(cx, address) -> int:
    """BULK frames the server received from the client holding `address`."""
    return next(c["bulk_rx_frames"] for c in cx.clients().values() if address in c["addresses"])


@pytest.mark.parametrize("fastpath", ["", "notso6"])
def test_tcp_over_ipv6_travels_whole_in_bulk_frames(cx, star, fastpath, monkeypatch, measure):
    """TCP over IPv6 from C1 to C2 through the relay: an iperf3 -6 stream,
    then 16 MiB checked by sha256. With the offloads of a default start,
    C1's TUN hands TCPv6 super-packets over whole, the server receives them
    as BULK frames and C2's TUN gets GSO_TCPV6 writes; with
    CAMEX_FASTPATH=notso6 C1's kernel cuts TCPv6 itself (DATA, no frame from
    C1) and the same bytes arrive. No TUN counts a read it could not cut."""
    monkeypatch.setenv("CAMEX_FASTPATH", fastpath)    # inherited by the daemons
    start_dual_stack(cx, star)
    before = frames_from(cx, V6["c1"])
    res = iperf3(star.c1, star.c2, V6["c2"], seconds=2)
    assert res.received_bytes > 1 << 20, res.raw.get("error")
    moved = tcp_transfer(star.c1, star.c2, V6["c2"], BULK_BYTES)
    assert moved["ok"] and moved["bytes"] == BULK_BYTES, moved
    st1, st2 = cx.status(star.c1), cx.status(star.c2)
    assert (st1["tun"]["errors"], st2["tun"]["errors"]) == (0, 0)
    assert st2["tun"]["gso_writes"]["tcp6"] > 0           # merged or whole, on the receiver
    frames = frames_from(cx, V6["c1"]) - before
    if fastpath:
        assert frames == 0
    else:
        assert st1["tun"]["tso"] and frames > 0 and st2["bulk_rx_frames"] > 0
    measure(f"TCP over IPv6 C1->C2 relay (CAMEX_FASTPATH={fastpath or 'default'}): iperf3 "
            f"{res.received_bps / 1e6:.0f} Mbit/s, {BULK_BYTES >> 20} MiB in "
            f"{moved['seconds']:.2f} s; BULK frames from C1 {frames}, C2 TUN GSO_TCPV6 "
            f"writes {st2['tun']['gso_writes']['tcp6']}")


def daemon_cpu(pids) -> float:
    """CPU seconds (user + system) the daemons with these pids have used."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def test_tcp_over_ipv6_and_ipv4_through_the_relay_side_by_side(cx, star, measure):
    """One 5-s iperf3 run over each inner family between the same two
    clients, through the relay: the cost of IPv6 inside as a ratio, of the
    throughput and of the three daemons' CPU time per byte (steadier than
    throughput on a shared machine)."""
    start_dual_stack(cx, star)
    pids = [cx.status(ns)["process"]["pid"] for ns in (star.server, star.c1, star.c2)]
    runs = {}
    for family, dst, port in (("IPv6", V6["c2"], 5201), ("IPv4", star.c2.tunnel_ip, 5202)):
        cpu0, frames0 = daemon_cpu(pids), cx.status(star.c1)["bulk_tx_frames"]
        res = iperf3(star.c1, star.c2, dst, seconds=5, port=port)
        assert res.received_bytes > 1 << 20, res.raw.get("error")
        frames = cx.status(star.c1)["bulk_tx_frames"] - frames0
        runs[family] = (res, (daemon_cpu(pids) - cpu0) / res.received_bytes * 1e9,
                        f"{res.received_bytes / frames / 1e3:.1f} kB per BULK frame"
                        if frames else "no BULK frame")
    (six, cpu6, kb6), (four, cpu4, kb4) = runs["IPv6"], runs["IPv4"]
    measure(f"iperf3 5 s C1->C2 relay: IPv6 inside {six.received_bps / 1e6:.0f} Mbit/s "
            f"({six.retransmits} retransmits, daemons {cpu6:.2f} CPU s per GB, {kb6}), "
            f"IPv4 inside {four.received_bps / 1e6:.0f} Mbit/s "
            f"({four.retransmits}, {cpu4:.2f} CPU s per GB, {kb4}); "
            f"ratio {six.received_bps / four.received_bps:.2f} (throughput), "
            f"{cpu6 / cpu4:.2f} (CPU per byte); server drops {cx.server_drops()}")

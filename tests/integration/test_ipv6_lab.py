"""IPv6 outside and inside at once, and IPv6 fragments, in the namespace lab.

- Auto clients, one with an IPv6-only profile and one dual-stack, on an
  IPv6-only underlay and on a dual-stack one (there C1 reaches the server
  over IPv6, C2 over IPv4): the addresses and routes the server pushes are
  on their TUNs and ping -6 flows both ways through the relay.
- Inner IPv6 packets larger than the tunnel: ping -6 -s 3000 from C1 to C2
  over the IPv6 underlay; C1's kernel fragments the inner IPv6 packet, the
  fragments cross the tunnel whole (the server fragments and reassembles
  nothing) and C2 reassembles them (and the same for its replies).
- An outer IPv6 datagram larger than the path: legacy plaintext clients
  over the IPv6 underlay with `-t 1500` (one whose inner packets do not
  fit a 1500-byte IPv6 path); the kernels fragment the camex datagrams and
  reassemble them on the way and traffic still passes.

Fragments are read from /proc/net/snmp6 of each namespace (Ip6FragCreates,
Ip6ReasmOKs): what the kernel says it did.
"""

from __future__ import annotations

import socket

import pytest

from lab.daemons import auto_config
from lab.v2lab import GLOBAL, V2Camex

pytestmark = pytest.mark.lab

V6 = {"srv": "fd00:c::1", "c1": "fd00:c::2", "c2": "fd00:c::3"}
ROUTE6 = "fd00:251::/48"


@pytest.fixture(params=["ipv6", "dual"])
def underlay(request):
    """Server + C1 + C2 over an IPv6-only, then a dual-stack underlay."""
    return request.getfixturevalue("star6" if request.param == "ipv6" else "star46")


def v6_addresses(ns, ifname) -> set:
    with ns.ipr() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        return {f"{a.get('address')}/{a['prefixlen']}"
                for a in ipr.get_addr(family=socket.AF_INET6, index=idx)}


def v6_routes(ns, ifname) -> set:
    with ns.ipr() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        return {f"{r.get('dst')}/{r['dst_len']}" for r in ipr.get_routes(family=socket.AF_INET6)
                if r.get("oif") == idx and r.get("dst")}


def ping6(ns, dst, count=5, size=None):
    r = ns.ping(dst, count=count, interval=0.05, wait=2, size=size, extra=["-6"])
    assert r.received == count, r.output
    return r


def frag_counters(lab) -> dict:
    """Ip6FragCreates / Ip6ReasmOKs per namespace role."""
    return {ns.role: {k: ns.snmp6()[k] for k in ("Ip6FragCreates", "Ip6ReasmOKs")}
            for ns in (lab.server, lab.c1, lab.c2)}


def grown(before: dict, after: dict) -> dict:
    return {role: {k: after[role][k] - v for k, v in counters.items()}
            for role, counters in before.items()}


def test_auto_clients_ipv6_only_and_dual_stack_over_the_underlay(underlay):
    lab = underlay
    cx = V2Camex(lab)
    text = auto_config(
        {"C1": {"local_cidr": f"{V6['c1']}/64"},
         "C2": {"local_cidr": [f"{lab.c2.tunnel_ip}/24", f"{V6['c2']}/64"]}},
        defaults={"gateway_ip": ["10.0.0.1", V6["srv"]], "route_cidr": ["10.251.0.0/24", ROUTE6]})
    cx.start_server(encrypt=True, psk=GLOBAL, config=cx.write_config(text))
    # On the dual-stack underlay C1 goes to the server over IPv6, C2 over
    # IPv4: the relay carries inner IPv6 between the two outer families.
    servers = {lab.c1: lab.c1.server_ip6, lab.c2: lab.c2.server_ip}
    procs = [cx.start_client(ns, wait=False, auto=True, encrypt=True, psk=GLOBAL,
                             server=servers[ns]) for ns in (lab.c1, lab.c2)]
    tun1, tun2 = (cx.wait_client(p) for p in procs)
    # What the server pushed is on the TUNs: C1 IPv6 only, C2 both.
    assert v6_addresses(lab.c1, tun1) == {f"{V6['c1']}/64"}
    assert lab.c1.addresses(tun1) == []
    assert ROUTE6 in v6_routes(lab.c1, tun1)
    assert v6_addresses(lab.c2, tun2) == {f"{V6['c2']}/64"}
    assert [str(a) for a in lab.c2.addresses(tun2)] == [f"{lab.c2.tunnel_ip}/24"]
    assert ROUTE6 in v6_routes(lab.c2, tun2)
    assert any(r["dst"] == "10.251.0.0/24" and r["dev"] == tun2 for r in lab.c2.routes())
    # The outer family each client uses, as the server sees it.
    eps = {c["client_id"]: c["endpoint"] for c in cx.clients().values()}
    assert eps["C1"].startswith(f"[{lab.c1.underlay6}]:"), eps
    c2_outer = lab.c2.underlay6 if lab.family == "ipv6" else lab.c2.underlay4
    assert eps["C2"].startswith(f"[{c2_outer}]:" if ":" in c2_outer else f"{c2_outer}:"), eps
    for ns in (lab.c1, lab.c2):
        st = cx.status(ns)
        assert st["protocol"] == "v2" and st["address6"] == f"{V6[ns.role]}/64"
    # ping -6 both ways through the relay.
    lab.c1.wait_ping(V6["c2"], timeout=10)
    ping6(lab.c1, V6["c2"])
    ping6(lab.c2, V6["c1"])


def test_inner_ipv6_larger_than_the_tunnel_is_fragmented_by_the_sender(star6):
    lab = star6
    cx = V2Camex(lab)
    cx.start_server(encrypt=True, psk=GLOBAL)
    procs = [cx.start_client(ns, wait=False, encrypt=True, psk=GLOBAL,
                             extra=["--protocol", "v2", "-l", f"{V6[ns.role]}/64"])
             for ns in (lab.c1, lab.c2)]
    tuns = [cx.wait_client(p) for p in procs]
    for ns, tun in zip((lab.c1, lab.c2), tuns):
        assert ns.links()[tun]["mtu"] == 1418   # the v2 default over IPv6
    lab.c1.wait_ping(V6["c2"], timeout=10)
    before = frag_counters(lab)
    count = 5
    # 3000 bytes of ICMPv6 payload: 3048-byte inner packets, three fragments
    # each at MTU 1418, both ways (the replies are as large).
    ping6(lab.c1, V6["c2"], count=count, size=3000)
    d = grown(before, frag_counters(lab))
    assert d["c1"]["Ip6FragCreates"] >= 3 * count, d
    assert d["c2"]["Ip6ReasmOKs"] >= count, d
    assert d["c2"]["Ip6FragCreates"] >= 3 * count, d
    assert d["c1"]["Ip6ReasmOKs"] >= count, d
    # The inner fragments crossed as whole camex datagrams: the server's
    # kernel neither fragmented nor reassembled anything.
    assert d["srv"] == {"Ip6FragCreates": 0, "Ip6ReasmOKs": 0}, d


def test_outer_ipv6_datagram_larger_than_the_path_is_fragmented(star6):
    lab = star6
    cx = V2Camex(lab, protocol="legacy")
    cx.start_server(extra=["--protocol", "legacy"])
    # -t 1500: the TUN takes full-size packets, which do not fit a
    # 1500-byte IPv6 path once the 48 bytes of IPv6 + UDP are added.
    procs = [cx.start_client(ns, wait=False, extra=["-t", "1500"]) for ns in (lab.c1, lab.c2)]
    tuns = [cx.wait_client(p) for p in procs]
    for ns, tun in zip((lab.c1, lab.c2), tuns):
        assert ns.links()[tun]["mtu"] == 1500
    lab.c1.wait_ping(lab.c2.tunnel_ip, timeout=10)
    before = frag_counters(lab)
    count = 5
    # 1460 bytes of ICMP payload: 1488-byte inner IPv4 packets (fit the TUN
    # whole), 1536-byte outer IPv6 packets (do not fit the veth).
    r = lab.c1.ping(lab.c2.tunnel_ip, count=count, interval=0.05, wait=2, size=1460,
                    extra=["-M", "do"])
    assert r.received == count, r.output
    d = grown(before, frag_counters(lab))
    # Each way: the sender's kernel fragments its datagram to the server,
    # the server's kernel reassembles it, camex relays it, the server's
    # kernel fragments it again and the receiver's reassembles it.
    for sender, receiver in (("c1", "c2"), ("c2", "c1")):
        assert d[sender]["Ip6FragCreates"] >= 2 * count, d
        assert d[receiver]["Ip6ReasmOKs"] >= count, d
    assert d["srv"]["Ip6ReasmOKs"] >= 2 * count, d
    assert d["srv"]["Ip6FragCreates"] >= 4 * count, d
    # Small packets are untouched by it.
    r = lab.c2.ping(lab.c1.tunnel_ip, count=count, interval=0.05, wait=2)
    assert r.received == count, r.output

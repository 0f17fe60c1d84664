"""The address policy (camex.base.addrpolicy): every rule on its own, IPv4 and
IPv6, then as the configuration file, the legacy server, the v2 server and
the relay apply it."""

import ipaddress
import logging

import pytest

from camex.base import addrpolicy as P
from camex.base.addrpolicy import AddressPolicy
from camex.daemon.config import ConfigError, check_policy, parse_config
from camex.legacy.client import LegacyClient
from camex.tunnel.server import ServerMux
from camex.legacy import codec
from camex.v2.core import V2ClientCore

from tests.support.mux_world import A1, A2, A3, PASS, World, ip_packet, relays_both_ways

ip = ipaddress.ip_address


def reason(policy, address, client=None):
    r = policy.check(address, client)
    return None if r is None else r.reason


# ------------------------------------------------------------ the rules

V4 = AddressPolicy(server_addresses=["10.0.0.1"], tunnel_networks=["10.0.0.0/24"],
                   routes=["10.251.0.0/16", "10.0.0.128/27", "10.0.0.0/8"],
                   behind={"cam1": [ipaddress.ip_network("10.251.1.0/24")]})
V6 = AddressPolicy(server_addresses=["fd00:1::1"], tunnel_networks=["fd00:1::/64"],
                   routes=["fd00:251::/48", "fd00::/16"],
                   behind={"cam1": [ipaddress.ip_network("fd00:251:0:1::/64")]})


@pytest.mark.parametrize("policy,address,client,expected", [
    # A tunnel address like any other.
    (V4, "10.0.0.2", None, None),
    (V6, "fd00:1::2", None, None),
    # The server's own address, for anyone, its own section or not.
    (V4, "10.0.0.1", None, P.SERVER_ADDRESS),
    (V4, "10.0.0.1", "cam1", P.SERVER_ADDRESS),
    (V6, "fd00:1::1", None, P.SERVER_ADDRESS),
    # Network and broadcast address of the tunnel network (IPv6: no broadcast).
    (V4, "10.0.0.0", None, P.TUNNEL_NETWORK),
    (V4, "10.0.0.255", None, P.TUNNEL_NETWORK),
    (V6, "fd00:1::", None, P.TUNNEL_NETWORK),
    (V6, "fd00:1::ffff:ffff:ffff:ffff", None, None),
    # Inside a route pushed to clients ...
    (V4, "10.251.0.5", None, P.SERVER_ROUTE),
    (V4, "10.251.1.5", "cam2", P.SERVER_ROUTE),
    (V4, "10.0.0.130", None, P.SERVER_ROUTE),   # a route inside the tunnel network
    (V6, "fd00:251::5", None, P.SERVER_ROUTE),
    # ... unless inside a network behind that very client (then outside
    # the tunnel network, which is a rule of its own).
    (V4, "10.251.1.5", "cam1", P.OUTSIDE_TUNNEL),
    (V6, "fd00:251:0:1::5", "cam1", P.OUTSIDE_TUNNEL),
    # Outside the tunnel network.
    (V4, "192.168.7.7", None, P.OUTSIDE_TUNNEL),
    (V6, "2001:db8::7", None, P.OUTSIDE_TUNNEL),
])
def test_rule(policy, address, client, expected):
    assert reason(policy, address, client) == expected


def test_a_route_that_holds_the_whole_tunnel_network_reserves_nothing_in_it():
    # 10.0.0.0/8 (V4) and fd00::/16 (V6) hold the tunnel network: its
    # addresses stay for clients; outside it the route reserves.
    assert reason(V4, "10.0.0.77") is None
    assert reason(V4, "10.9.9.9") == P.SERVER_ROUTE
    assert reason(V6, "fd00:1::77") is None
    assert reason(V6, "fd00:9::9") == P.SERVER_ROUTE


def test_the_exemption_holds_without_a_known_tunnel_network():
    p = AddressPolicy(routes=["10.251.0.0/16"],
                      behind={"cam1": [ipaddress.ip_network("10.251.1.0/24")]})
    assert reason(p, "10.251.1.5", "cam1") is None
    assert reason(p, "10.251.1.5", "cam2") == P.SERVER_ROUTE
    assert reason(p, "10.251.1.5") == P.SERVER_ROUTE
    assert reason(p, "172.16.0.1") is None   # no tunnel network: no containment


def test_tiny_tunnel_networks_have_no_network_or_broadcast_address():
    p = AddressPolicy(tunnel_networks=["10.0.0.0/31", "fd00::/127"])
    assert reason(p, "10.0.0.0") is None and reason(p, "10.0.0.1") is None
    assert reason(p, "fd00::") is None


def test_families_do_not_mix():
    # An IPv6 claim is judged by IPv6 networks only, and the other way round.
    p = AddressPolicy(server_addresses=["10.0.0.1"], tunnel_networks=["10.0.0.0/24"])
    assert reason(p, "fd00::5") is None
    assert reason(V6, "10.0.0.1") is None


def test_refusal_names_the_address():
    r = V4.check("10.251.0.5")
    assert "10.251.0.5" in r.message and "10.251.0.0/16" in r.message
    assert V4.is_server_address("10.0.0.1") and not V4.is_server_address("10.0.0.2")
    assert V4.server_packed == {bytes([10, 0, 0, 1])}
    assert V6.server_packed == {ip("fd00:1::1").packed}


def test_network_refusal_for_a_network_behind_a_client():
    assert V4.network_refusal("10.0.0.0/30").reason == P.SERVER_ADDRESS
    assert V4.network_refusal("10.251.1.0/24") is None
    assert V6.network_refusal("fd00:1::/120").reason == P.SERVER_ADDRESS


# --------------------------------------------- from a configuration file

def test_tunnel_network_from_the_configuration():
    def nets(text, ifaces=()):
        return [str(n) for n in AddressPolicy.from_config(parse_config(text), ifaces).tunnel_networks]

    assert nets("[defaults]\ngateway_ip=10.0.0.1\n") == ["10.0.0.0/24"]
    assert nets("[defaults]\ngateway_ip=10.0.0.1\nlocal_cidr=10.0.0.9/16\n") == ["10.0.0.0/16"]
    # The widest client section's network that holds the gateway.
    assert nets("[defaults]\ngateway_ip=10.64.0.1\n[client a]\nlocal_cidr=10.64.3.2/16\n"
                "[client b]\nlocal_cidr=10.64.0.3/20\n") == ["10.64.0.0/16"]
    assert nets("[defaults]\nclient_cidr=10.5.0.0/24\nclient_cidr=10.6.0.0/24\n"
                "gateway_ip=10.5.0.1\n") == ["10.5.0.0/24", "10.6.0.0/24"]
    # A section with a gateway of its own: a second subnet.
    assert nets("[defaults]\ngateway_ip=10.0.0.1\n[client a]\nlocal_cidr=192.168.5.2/25\n"
                "gateway_ip=192.168.5.1\n") == ["10.0.0.0/24", "192.168.5.0/25"]
    assert nets("[defaults]\nmtu=1400\n") == []
    assert nets("[defaults]\nmtu=1400\n", [ipaddress.ip_interface("10.7.0.1/24")]) == ["10.7.0.0/24"]
    assert nets("", [ipaddress.ip_interface("10.7.0.1/32")]) == []


def test_server_addresses_from_the_configuration_and_the_server_tun():
    cfg = parse_config("[defaults]\ngateway_ip=10.0.0.1\n[client a]\nlocal_cidr=10.0.0.2/24\n"
                       "gateway_ip=10.0.0.254\n")
    p = AddressPolicy.from_config(cfg, [ipaddress.ip_interface("10.0.0.250/24")])
    assert p.server_addresses == {ip("10.0.0.1"), ip("10.0.0.254"), ip("10.0.0.250")}


@pytest.mark.parametrize("text,line,words", [
    ("[defaults]\ngateway_ip=10.0.0.1\n\n[client cam1]\nlocal_cidr=10.0.0.1/24\n",
     5, "[client cam1] local_cidr=10.0.0.1/24: 10.0.0.1 is an address of the server"),
    ("[defaults]\ngateway_ip=10.0.0.1\n[client cam1]\nmtu=1400\nlocal_cidr=10.0.0.255/24\n",
     5, "broadcast address of 10.0.0.0/24"),
    ("[defaults]\ngateway_ip=10.0.0.1\nroute_cidr=10.251.0.0/24\n[client cam1]\n"
     "local_cidr=10.251.0.5/24\n", 5, "inside 10.251.0.0/24"),
    ("[defaults]\nclient_cidr=10.0.0.0/24\ngateway_ip=10.0.0.1\n[client cam1]\n"
     "local_cidr=10.9.0.5/24\n", 5, "outside the tunnel network (10.0.0.0/24)"),
    # A [defaults] local_cidr every auto client would get: its line.
    ("[defaults]\ngateway_ip=10.0.0.1\nlocal_cidr=10.0.0.1/24\n[client cam1]\nmtu=1400\n",
     3, "(from [defaults])"),
    ("[defaults]\ngateway_ip=10.0.0.1\n[client cam1]\nlocal_cidr=10.0.0.2/24\n"
     "allowed_cidr=10.251.0.0/24\nallowed_cidr=10.0.0.0/30\n", 6,
     "allowed_cidr=10.0.0.0/30: 10.0.0.0/30 holds 10.0.0.1"),
])
def test_a_section_that_breaks_the_policy_is_an_error_with_file_and_line(text, line, words):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "camex.conf")
    assert e.value.line == line and e.value.path == "camex.conf"
    assert words in str(e.value)
    assert str(e.value).startswith(f"camex.conf:{line}: ")


def test_allowed_cidr_inside_a_pushed_route_is_fine_for_its_section():
    cfg = parse_config("[defaults]\ngateway_ip=10.0.0.1\nroute_cidr=10.251.0.0/16\n"
                       "[client cam1]\nlocal_cidr=10.0.0.2/24\nallowed_cidr=10.251.1.0/24\n")
    assert cfg.client("cam1").profile.allowed == [ipaddress.ip_network("10.251.1.0/24")]


def test_the_server_tun_address_is_checked_at_startup_and_reload():
    cfg = parse_config("[defaults]\ngateway_ip=10.0.0.1\n[client cam1]\nlocal_cidr=10.0.0.9/24\n",
                       "camex.conf")
    check_policy(cfg)
    with pytest.raises(ConfigError, match=r"camex.conf:4: .*10.0.0.9 is an address of the server"):
        check_policy(cfg, [ipaddress.ip_interface("10.0.0.9/24")])


def test_client_cidr_only_in_defaults():
    with pytest.raises(ConfigError, match="t:2: client_cidr: only allowed in \\[defaults\\]"):
        parse_config("[client a]\nclient_cidr=10.0.0.0/24\n", "t")


# ------------------------------------------------------ the legacy server

DB = """
[defaults]
gateway_ip=10.0.0.1
route_cidr=10.251.0.0/24

[client C1]
local_cidr=10.0.0.2/24
"""

CLAIMS = [("10.0.0.1", P.SERVER_ADDRESS), ("10.0.0.0", P.TUNNEL_NETWORK),
          ("10.0.0.255", P.TUNNEL_NETWORK), ("10.251.0.5", P.SERVER_ROUTE),
          ("192.168.7.7", P.OUTSIDE_TUNNEL)]


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plaintext"])
def test_legacy_register_refused_without_answer_with_one_warning(encrypt, caplog):
    mux = ServerMux(passphrase=PASS if encrypt else None, encrypt=encrypt,
                    config=parse_config(DB), v2=False, local_delivery=True)
    aead = codec.new_aead(codec.derive_key(PASS)) if encrypt else None
    caplog.set_level(logging.WARNING)
    for i, (claim, _) in enumerate(CLAIMS):
        msg = codec.register_manual(claim)
        for n in range(3):    # a client retries: still one warning per source
            d = codec.seal(aead, codec.T_REGISTER, b"pfx%d" % i, n, msg) if encrypt else msg
            mux.datagram_received(d, A3, 1000.0 + n)
    assert mux.outbox == [] and mux.legacy.by_ip == {}
    want = {}
    for _, r in CLAIMS:
        want[r] = want.get(r, 0) + 3
    assert mux.refusals() == want
    assert mux.drops()["register-refused"] == 15
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "10.250.2.2:4003" in lines[0] and "10.0.0.1 is an address of the server" in lines[0]


def test_legacy_reload_drops_a_client_the_new_configuration_refuses():
    mux = ServerMux(passphrase=PASS, encrypt=True, config=parse_config(DB), v2=False)
    c = LegacyClient(auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.77/24"),
                     key=codec.derive_key(PASS))
    w = World.__new__(World)
    w.now, w.server, w.clients = 1000.0, mux, {}
    w.add(A1, c)
    assert b"\x0a\x00\x00\x4d" in mux.legacy.by_ip
    mux.reload(parse_config(DB.replace("gateway_ip=10.0.0.1", "gateway_ip=10.0.0.77")),
               PASS, 1001.0)
    assert mux.legacy.by_ip == {}


# ------------------------------------------------------------ the v2 server

def test_v2_claims_are_refused_with_the_reason(caplog):
    caplog.set_level(logging.ERROR)
    w = World()
    for i, (claim, _why) in enumerate(CLAIMS):
        thief = V2ClientCore(auto=False, passphrase=PASS,
                             local_cidr=ipaddress.IPv4Interface(f"{claim}/24"))
        w.add((A3[0], 5000 + i), thief)
        assert not thief.established
    assert w.server.v2.server.peers == {}
    assert set(w.server.refusals()) == {r for _, r in CLAIMS}
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "address refused (10.0.0.1 is an address of the server)" in said
    assert "address refused (192.168.7.7 is outside the tunnel network (10.0.0.0/24))" in said


def test_v2_client_with_its_own_allowed_network_inside_a_route():
    db = DB + "allowed_cidr=10.251.0.0/25\n\n[client C3]\nlocal_cidr=10.0.0.4/24\n"
    w = World.__new__(World)
    w.now, w.clients = 1000.0, {}
    w.server = ServerMux(passphrase=PASS, encrypt=True, config=parse_config(db))
    c1 = V2ClientCore(auto=True, passphrase=PASS, client_id="C1")
    c3 = V2ClientCore(auto=True, passphrase=PASS, client_id="C3")
    w.add(A1, c1)
    w.add(A3, c3)
    assert c1.established and c3.established
    # C3 reaches the network behind C1, and C1 answers from it ...
    relays_both_ways(w, c3, c1, "10.0.0.4", "10.251.0.7")
    # ... and another client may not claim an address there.
    thief = V2ClientCore(auto=False, passphrase=PASS,
                         local_cidr=ipaddress.IPv4Interface("10.251.0.9/24"))
    w.add(A2, thief)
    assert not thief.established
    assert w.server.refusals() == {P.SERVER_ROUTE: 1}


# ---------------------------------------------------------------- the relay

def test_relay_never_hands_a_server_address_to_a_client():
    """Whatever the table says (here: planted by hand), packets for the
    gateway go to the server's TUN, from either protocol's clients."""
    w = World(local_delivery=True)
    c1 = V2ClientCore(auto=True, passphrase=PASS, client_id="C1")
    c2 = LegacyClient(auto=True, client_id="C2", key=codec.derive_key(b"per-client-secret-c2"))
    w.add(A1, c1)
    w.add(A2, c2)
    srv = w.server
    v2_peer = next(iter(srv.v2.server.peers.values()))
    legacy_peer = next(iter(srv.legacy.by_endpoint.values()))
    gw = ipaddress.IPv4Address("10.0.0.1")
    srv.v2.server.by_address[int(gw)] = v2_peer        # as if C1 held the gateway
    p = ip_packet("10.0.0.3", "10.0.0.1")
    c2.tun_packet(p, w.now)
    w.pump()
    assert srv.to_tun == [p] and c1.to_tun == []
    srv.to_tun.clear()
    del srv.v2.server.by_address[int(gw)]
    srv.legacy.by_ip[gw.packed] = legacy_peer           # as if C2 held it
    q = ip_packet("10.0.0.2", "10.0.0.1")
    c1.tun_packet(q, w.now)
    w.pump()
    assert srv.to_tun == [q] and c2.to_tun == []
    srv.tun_packet(ip_packet("10.0.0.1", "10.0.0.1"))
    w.pump()
    assert c2.to_tun == [] and c1.to_tun == []


def test_v2_reload_closes_a_client_the_new_configuration_refuses():
    w = World()
    c = V2ClientCore(auto=False, passphrase=PASS,
                     local_cidr=ipaddress.IPv4Interface("10.0.0.77/24"))
    w.add(A3, c)
    assert [str(p.grant.address) for p in w.server.v2.server.peers.values()] == ["10.0.0.77"]
    w.server.reload(parse_config(DB.replace("route_cidr=10.251.0.0/24",
                                            "route_cidr=10.0.0.64/26")), PASS, w.now)
    assert w.server.v2.server.peers == {}
    assert w.server.refusals() == {P.SERVER_ROUTE: 1}

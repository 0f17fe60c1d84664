"""IPv6 inside the tunnel, as the command line and the configuration file take it.

A v2 client may have an IPv6 tunnel address, gateway and routes beside or
instead of its IPv4 ones; the legacy protocol stays IPv4. Every bad value is
one line naming the option, or the file and the line.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_network

import pytest

from camex.base.addrpolicy import AddressPolicy
from camex.daemon.check import _config_warnings
from camex.daemon.config import ConfigError, parse_config
from camex.daemon.options import UsageError, parse_args

CLIENT = ["-M", "client", "-s", "10.250.0.1", "-p", "7000"]
V2 = ["--protocol", "v2", "-k", "secret"]


def parse(argv):
    return parse_args(argv, environ={})


# ------------------------------------------------------------ command line


def test_dual_stack_manual_client():
    o = parse(CLIENT + V2 + ["-l", "10.0.0.2/24", "-l", "fd00:c::2/64", "-g", "10.0.0.1",
                             "-g", "fd00:c::1", "-c", "10.251.0.0/24", "-c", "fd00:251::/48"])
    assert o.local_cidr == IPv4Interface("10.0.0.2/24")
    assert o.local_cidr6 == IPv6Interface("fd00:c::2/64")
    assert o.gateway_ip == IPv4Address("10.0.0.1") and o.gateway_ip6 == IPv6Address("fd00:c::1")
    assert o.routes == [ip_network("10.251.0.0/24"), ip_network("fd00:251::/48")]
    assert "local_cidr6=fd00:c::2/64" in o.describe()


def test_ipv6_only_manual_client_over_v2():
    o = parse(CLIENT + V2 + ["-l", "fd00:c::2/64", "-c", "2001:db8:5::/48"])
    assert o.local_cidr is None and o.local_cidr6 == IPv6Interface("fd00:c::2/64")


@pytest.mark.parametrize("extra", [[], ["--protocol", "legacy", "-k", "x"],
                                   ["--protocol", "auto", "-k", "x"]])
def test_ipv6_only_client_needs_v2(extra):
    with pytest.raises(UsageError) as e:
        parse(CLIENT + extra + ["-l", "fd00:c::2/64"])
    assert str(e.value).startswith("--local-cidr: fd00:c::2/64 alone needs --protocol v2")


@pytest.mark.parametrize("argv, words", [
    (["-l", "fe80::2%eth0/64"], "--local-cidr: 'fe80::2%eth0' has a scope id"),
    (["-l", "::ffff:10.0.0.2/120"], "--local-cidr: '::ffff:10.0.0.2' is an IPv4-mapped "
                                    "IPv6 address; write the IPv4 address 10.0.0.2"),
    (["-l", "fd00::2/129"], "--local-cidr: 'fd00::2/129' has a bad prefix length (0..128"),
    (["-l", "fe80::2/64"], "--local-cidr: 'fe80::2/64' is not a usable tunnel address"),
    (["-l", "fd00::/64"], "--local-cidr: 'fd00::/64' is the network address"),
    (["-l", "fd00::2/64", "-l", "fd00::3/64"], "--local-cidr: one IPv6 address only"),
    (["-l", "fd00::2/64", "-g", "fe80::1"], "--gateway-ip: 'fe80::1' is link-local"),
    (["-l", "fd00::2/64", "-g", "fd00::1", "-g", "fd00::9"], "--gateway-ip: one IPv6 gateway"),
    (["-l", "fd00::2/64", "-g", "fd00::2"], "--gateway-ip: fd00::2 is the local address"),
    (["-l", "fd00::2/64", "-c", "fd00:5::1/48"], "--route-cidr: 'fd00:5::1/48' has host "
                                                "bits set (did you mean fd00:5::/48?)"),
    (["-l", "fd00::2/64", "-c", "fd00:5::%2/48"], "--route-cidr: 'fd00:5::%2' has a scope id"),
    (["-l", "fd00::2/64", "-c", "fd00:5::/200"], "--route-cidr: 'fd00:5::/200' has a bad "
                                                "prefix length (0..128"),
])
def test_bad_ipv6_values_are_one_line_naming_the_option(argv, words):
    with pytest.raises(UsageError) as e:
        parse(CLIENT + V2 + argv)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(words), msg


def test_sixteen_routes_of_each_family():
    v4 = [x for i in range(16) for x in ("-c", f"10.{i}.0.0/16")]
    v6 = [x for i in range(16) for x in ("-c", f"fd00:{i}::/32")]
    o = parse(CLIENT + V2 + ["-l", "10.0.0.2/24"] + v4 + v6)
    assert len(o.routes) == 32
    with pytest.raises(UsageError, match="at most 16 routes, got 17 .IPv6."):
        parse(CLIENT + V2 + ["-l", "10.0.0.2/24"] + v4 + v6 + ["-c", "fd00:99::/32"])


# ------------------------------------------------------------ configuration file

GOOD = """\
[defaults]
gateway_ip=10.0.0.1
gateway_ip=fd00:c::1
route_cidr=10.251.0.0/24
route_cidr=fd00:251::/48

[client C1]
local_cidr=10.0.0.2/24
local_cidr=fd00:c::2/64
allowed_cidr=fd00:77::/48

[client C6]
local_cidr=fd00:c::6/64
"""


def test_config_takes_ipv6_values():
    cfg = parse_config(GOOD, "/etc/camex/camex.conf")
    p1, p6 = cfg.profile_for("C1"), cfg.profile_for("c6")
    assert p1.local_cidr == IPv4Interface("10.0.0.2/24")
    assert p1.local_cidr6 == IPv6Interface("fd00:c::2/64")
    assert p1.gateway_ip6 == IPv6Address("fd00:c::1") and p6.gateway_ip6 == p1.gateway_ip6
    assert p1.routes == [ip_network("10.251.0.0/24"), ip_network("fd00:251::/48")]
    assert p1.allowed == [ip_network("fd00:77::/48")]
    assert p6.local_cidr is None and p6.local_cidr6 == IPv6Interface("fd00:c::6/64")
    # check-config says what a legacy client of C6 would get: nothing
    warnings = _config_warnings(cfg)
    assert warnings == ["/etc/camex/camex.conf:12: [client C6] has only an IPv6 local_cidr: "
                        "a legacy client with this ID gets no configuration (the legacy "
                        "protocol carries IPv4 only; v2 clients are served)"]


def test_policy_applies_to_ipv6_claims():
    cfg = parse_config(GOOD)
    pol = AddressPolicy.from_config(cfg)
    assert pol.check(IPv6Address("fd00:c::1")).reason == "server-address"
    assert pol.check(IPv6Address("fd00:c::")).reason == "tunnel-network"
    assert pol.check(IPv6Address("fd00:251::5")).reason == "server-route"
    assert pol.check(IPv6Address("fd00:d::5")).reason == "outside-tunnel"
    assert pol.check(IPv6Address("fd00:c::9")) is None
    assert pol.check(IPv4Address("10.0.0.9")) is None


@pytest.mark.parametrize("text, line, words", [
    ("[defaults]\ngateway_ip=fe80::1\n", 2, "gateway_ip: 'fe80::1' is link-local"),
    ("[client A]\nlocal_cidr=fd00::2%eth0/64\n", 2, "local_cidr: 'fd00::2%eth0' has a scope id"),
    ("[client A]\nlocal_cidr=::ffff:10.0.0.2/104\n", 2,
     "local_cidr: '::ffff:10.0.0.2' is an IPv4-mapped IPv6 address"),
    ("[client A]\nlocal_cidr=fd00::2/129\n", 2,
     "local_cidr: 'fd00::2/129' has a bad prefix length (0..128 for IPv6)"),
    ("[client A]\nroute_cidr=fd00::/130\n", 2, "route_cidr: 'fd00::/130' has a bad prefix"),
    ("[client A]\nallowed_cidr=fd00:1::/129\n", 2, "allowed_cidr: 'fd00:1::/129' has a bad"),
    ("[client A]\nlocal_cidr=fd00::2/64\n\nlocal_cidr=fd00::3/64\n", 4,
     "local_cidr: given twice in this section (IPv6) (first at line 2)"),
    ("[defaults]\ngateway_ip=fd00::1\ngateway_ip=fd00::2\n", 3,
     "gateway_ip: given twice in this section (IPv6) (first at line 2)"),
    # a client section holding the IPv6 gateway: the address policy's refusal
    ("[defaults]\ngateway_ip=fd00:c::1\n[client A]\nlocal_cidr=fd00:c::1/64\n", 4,
     "[client A] local_cidr=fd00:c::1/64: fd00:c::1 is an address of the server"),
    ("[defaults]\ngateway_ip=fd00:c::1\n[client A]\nallowed_cidr=fd00:c::/64\n", 4,
     "[client A] allowed_cidr=fd00:c::/64: fd00:c::/64 holds fd00:c::1"),
])
def test_bad_ipv6_config_lines_name_file_and_line(text, line, words):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "/etc/camex/camex.conf")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"/etc/camex/camex.conf:{line}: "), msg
    assert words in msg, msg


def test_one_address_of_each_family_is_not_twice():
    cfg = parse_config("[client A]\nlocal_cidr=10.0.0.2/24\nlocal_cidr=fd00::2/64\n")
    assert cfg.client("A").profile.local_cidr6 == IPv6Interface("fd00::2/64")


def test_the_server_tun_gets_its_ipv6_gateway_address_too():
    from camex.daemon.server import tun_config
    cfg = parse_config(GOOD)
    opts = parse_args(["-M", "server", "-p", "7000", "--server-tun", "-k", "x"], environ={})
    tun = tun_config(opts, cfg)
    assert (str(tun.address), str(tun.address6)) == ("10.0.0.1/24", "fd00:c::1/64")
    own = parse_args(["-M", "server", "-p", "7000", "--server-tun", "-k", "x",
                      "-l", "fd00:c::1/120"], environ={})
    tun = tun_config(own, cfg)
    assert (str(tun.address), str(tun.address6)) == ("10.0.0.1/24", "fd00:c::1/120")
    six_only = parse_config("[defaults]\ngateway_ip=fd00:c::1\n[client A]\n"
                            "local_cidr=fd00:c::2/64\n")
    tun = tun_config(opts, six_only)
    assert tun.address is None and str(tun.address6) == "fd00:c::1/64"


def test_client_cidr_per_family():
    both = parse_config(GOOD.replace("[defaults]\n", "[defaults]\nclient_cidr=10.0.0.0/16\n"
                                     "client_cidr=fd00:c::/48\n"))
    pol = AddressPolicy.from_config(both)
    assert pol.check(IPv6Address("fd00:c:0:1::5")) is None          # inside the /48
    assert pol.check(IPv6Address("fd00:d::5")).reason == "outside-tunnel"
    # an IPv4 client_cidr= alone: the IPv6 tunnel network is still derived
    four = parse_config(GOOD.replace("[defaults]\n", "[defaults]\nclient_cidr=10.0.0.0/16\n"))
    pol = AddressPolicy.from_config(four)
    assert pol.check(IPv4Address("10.0.9.9")) is None
    assert pol.check(IPv6Address("fd00:c:0:1::5")).reason == "outside-tunnel"
    assert pol.check(IPv6Address("fd00:c::9")) is None

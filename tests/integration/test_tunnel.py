"""Server and two clients in the namespace lab, manual and auto mode,
plaintext and encrypted (auto: C2 with its per-client passphrase, as in the
captures' database): tunnels come up with the right addresses, ping and
iperf3 cross from C1 to C2 through the server, and the wire carries what the
spec says."""

import ipaddress
import struct

import pytest

from lab.daemons import C2_PSK, GLOBAL_PSK, vectors_config
from lab.traffic import UdpSniffer, iperf3
from tests.support import spec_wire


pytestmark = pytest.mark.lab

# BLAKE2b-128 of the key of `demo-global-secret` (spec, encrypted mode).
GLOBAL_FINGERPRINT = "beeba85739952129851313a1f979fafc"


def start_tunnel(camex, star, mode, encrypted):
    """Server + C1 + C2 up; returns (server, c1, c2) processes."""
    if mode == "manual":
        psk = GLOBAL_PSK if encrypted else None
        srv = camex.start_server(encrypt=encrypted, psk=psk)
        c1 = camex.start_client(star.c1, encrypt=encrypted, psk=psk)
        c2 = camex.start_client(star.c2, encrypt=encrypted, psk=psk)
    else:
        config = camex.write_config(vectors_config(c2_psk=C2_PSK if encrypted else None))
        srv = camex.start_server(encrypt=encrypted, psk=GLOBAL_PSK if encrypted else None, config=config)
        # Both auto clients start in the same instant (legacy flaw 4).
        c1 = camex.start_client(star.c1, wait=False, auto=True, encrypt=encrypted,
                                psk=GLOBAL_PSK if encrypted else None)
        c2 = camex.start_client(star.c2, wait=False, auto=True, encrypt=encrypted,
                                psk=C2_PSK if encrypted else None)
        camex.wait_client(c1)
        camex.wait_client(c2)
    return srv, c1, c2


# (mode, encrypted, protocol): the legacy protocol in every mode, plus the
# daemon's default with a passphrase (v2, legacy fallback) for comparison.
MODES = [
    ("manual", False, "legacy"), ("manual", True, "legacy"),
    ("auto", False, "legacy"), ("auto", True, "legacy"),
    ("manual", True, None), ("auto", True, None),
]
IDS = ["manual-plain", "manual-enc", "auto-plain", "auto-enc", "manual-enc-default", "auto-enc-default"]


@pytest.mark.parametrize("mode,encrypted,protocol", MODES, ids=IDS)
def test_ping_and_iperf3_between_clients(camex, star, mode, encrypted, protocol, measure):
    camex.protocol = protocol
    srv, c1, c2 = start_tunnel(camex, star, mode, encrypted)

    for ns, proc in ((star.c1, c1), (star.c2, c2)):
        dev = camex.tun_dev(proc)
        assert ipaddress.IPv4Interface(f"{ns.tunnel_ip}/24") in ns.addresses(dev)
        assert ns.links()[dev]["up"]

    star.c1.wait_ping(star.c2.tunnel_ip, timeout=15)
    r = star.c1.ping(star.c2.tunnel_ip, count=10, interval=0.05)
    assert (r.transmitted, r.received) == (10, 10), r.output
    r = star.c2.ping(star.c1.tunnel_ip, count=10, interval=0.05)
    assert (r.transmitted, r.received) == (10, 10), r.output

    res = iperf3(star.c1, star.c2, star.c2.tunnel_ip, seconds=2)
    measure(f"iperf3 C1->C2 {res.gbps:.3f} Gbit/s ({res.retransmits} retransmits), "
            f"ping rtt {r.rtt_avg_ms:.3f} ms")
    assert res.received_bytes > 1 << 20

    for proc in (srv, c1, c2):
        assert proc.running(), proc.tail()
    # One line per registration, none per packet: the whole iperf3 run
    # (hundreds of thousands of datagrams) leaves the logs short.
    for proc in (srv, c1, c2):
        assert len(proc.output().splitlines()) < 40, proc.tail(60)
    if encrypted:
        assert f"key fingerprint {GLOBAL_FINGERPRINT}" in srv.output()
    expected = protocol or ("v2" if encrypted else "legacy")
    assert {c["protocol"] for c in camex.status(star.server)["clients"]} == {expected}


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "enc"])
def test_auto_client_takes_profile_from_server_config(camex, star, encrypted):
    # The database of the captures, with an MTU that fits the path in both
    # modes, so that the server's value is taken as it is.
    text = vectors_config(c2_psk=C2_PSK if encrypted else None).replace("mtu=1500", "mtu=1400")
    config = camex.write_config(text)
    psk = GLOBAL_PSK if encrypted else None
    camex.start_server(encrypt=encrypted, psk=psk, config=config)
    c1 = camex.start_client(star.c1, wait=False, auto=True, encrypt=encrypted, psk=psk)
    c2 = camex.start_client(star.c2, wait=False, auto=True, encrypt=encrypted,
                            psk=C2_PSK if encrypted else None)
    for ns, proc in ((star.c1, c1), (star.c2, c2)):
        dev = camex.wait_client(proc)
        # [defaults] mtu, route_cidr, gateway_ip; [client Cn] local_cidr.
        assert ns.links()[dev]["mtu"] == 1400
        assert ns.addresses(dev) == [ipaddress.IPv4Interface(f"{ns.tunnel_ip}/24")]
        routes = {(r["dst"], r["dev"]) for r in ns.routes()}
        assert ("10.251.0.0/24", dev) in routes
        assert ("10.0.0.0/24", dev) in routes
        assert "gateway 10.0.0.1" in proc.find(r"tunnel up: .*").group(0)
    st = camex.status(star.server)
    by_id = {c["client_id"].upper(): c for c in st["clients"]}
    assert by_id["C1"]["address"] == "10.0.0.2" and by_id["C2"]["address"] == "10.0.0.3"
    assert by_id["C1"]["endpoint"].startswith("10.250.0.2:")
    assert by_id["C2"]["endpoint"].startswith("10.250.1.2:")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "enc"])
def test_wire_format(camex, star, encrypted):
    """Plaintext: data datagrams are bare IPv4 packets, control is `CX2P ...`
    text. Encrypted: every datagram is a CX2P frame of length L + 43 and the
    inner packet is not visible."""
    start_tunnel(camex, star, "manual", encrypted)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=15)
    with UdpSniffer(star.server, "c1", 7000) as sniff:
        r = star.c1.ping(star.c2.tunnel_ip, count=5, interval=0.05)
        payloads = sniff.payloads()
    assert r.received == 5, r.output
    # 5 requests from C1 and 5 replies to it.
    assert len(payloads) >= 10
    c2_ip = bytes([10, 0, 0, 3])
    for p in payloads:
        if encrypted:
            assert p[:4] == b"CX2P" and p[4] in (1, 2, 3)
            (length,) = struct.unpack("!H", p[17:19])
            assert len(p) == length + 43
            assert p[5 + 4:17] == p[19:27]  # nonce counter == sequence field
            assert c2_ip not in p[27:]
        elif p[:4] != b"CX2P":
            assert p[0] >> 4 == 4 and p[9] == 1  # IPv4 / ICMP, no header
    if not encrypted:
        assert sum(1 for p in payloads if p[0] == 0x45 and c2_ip in (p[12:16], p[16:20])) >= 10


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "enc"])
def test_default_mtu_sends_full_size_packets_unfragmented(camex, star, encrypted):
    """Without --mtu the TUN MTU leaves room for the tunnel overhead: a
    full-size inner packet crosses the 1500-byte veth in one datagram."""
    srv, c1, c2 = start_tunnel(camex, star, "manual", encrypted)
    dev = camex.tun_dev(c1)
    mtu = star.c1.links()[dev]["mtu"]
    overhead = 28 + (43 if encrypted else 0)
    assert mtu <= 1500 - overhead
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=15)
    before = star.c1.snmp()["Ip.FragCreates"], star.c2.snmp()["Ip.FragCreates"]
    with UdpSniffer(star.server, "c1", 7000) as sniff:
        # Don't-fragment pings of exactly the TUN MTU, both ways.
        r = star.c1.ping(star.c2.tunnel_ip, count=5, interval=0.05, size=mtu - 28, extra=["-M", "do"])
        assert r.received == 5, r.output
        payloads = sniff.payloads()
    after = star.c1.snmp()["Ip.FragCreates"], star.c2.snmp()["Ip.FragCreates"]
    assert after == before
    assert sniff.fragments == 0
    assert max(len(p) for p in payloads) == mtu + (43 if encrypted else 0)


@pytest.mark.parametrize("mode,encrypted", [("manual", False), ("manual", True), ("auto", False), ("auto", True)],
                         ids=["manual-plain", "manual-enc", "auto-plain", "auto-enc"])
def test_wire_conforms_to_the_spec(camex, star, mode, encrypted):
    """Everything C1 and the server exchange, read with a codec written from
    the spec alone (tests/support/spec_wire.py): REGISTER and CONFIG
    lines byte for byte, every encrypted frame opens under the key derived
    from the passphrase, sequence numbers rise, C1 keeps one sender prefix."""
    auto = mode == "auto"
    psk = GLOBAL_PSK if encrypted else None
    config = camex.write_config(vectors_config(c2_psk=C2_PSK if encrypted else None)) if auto else None
    camex.start_server(encrypt=encrypted, psk=psk, config=config)
    with UdpSniffer(star.server, "c1", 7000) as sniff:
        camex.start_client(star.c1, auto=auto, encrypt=encrypted, psk=psk)
        camex.start_client(star.c2, auto=auto, encrypt=encrypted,
                           psk=(C2_PSK if auto else GLOBAL_PSK) if encrypted else None)
        star.c1.wait_ping("10.0.0.3", timeout=15)
        star.c1.ping("10.0.0.3", count=5, interval=0.05)
        grams = sniff.datagrams()
    up = [g[4] for g in grams if g[0] == "10.250.0.2"]
    down = [g[4] for g in grams if g[0] == "10.250.0.1"]
    assert up and down

    if encrypted:
        k = spec_wire.key(GLOBAL_PSK)
        frames = []
        for direction, payloads in (("up", up), ("down", down)):
            opened = [spec_wire.open_frame(k, p) for p in payloads]  # raises if any does not open
            frames.append(opened)
            by_prefix = {}
            for _, prefix, seq, _ in opened:
                by_prefix.setdefault(prefix, []).append(seq)
            for seqs in by_prefix.values():
                assert seqs == sorted(set(seqs)), f"{direction}: sequence numbers must rise"
        up_frames, down_frames = frames
        assert len({f[1] for f in up_frames}) == 1, "a client keeps one sender prefix per process"
        controls_up = [(t, pt) for t, _, _, pt in up_frames if t != spec_wire.DATA]
        controls_down = [(t, pt) for t, _, _, pt in down_frames if t != spec_wire.DATA]
        data_up = [pt for t, _, _, pt in up_frames if t == spec_wire.DATA]
    else:
        controls_up = [(None, p) for p in up if p[:4] == b"CX2P"]
        controls_down = [(None, p) for p in down if p[:4] == b"CX2P"]
        data_up = [p for p in up if p[:4] != b"CX2P"]

    register = (b"CX2P REGISTER MODE=AUTO CLIENT_ID=C1\n" if auto
                else b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n")
    assert controls_up[0][1] == register
    assert all(pt == register for _, pt in controls_up)
    if encrypted:
        assert {t for t, _ in controls_up} == {spec_wire.REGISTER}
    if auto:
        config_line = (b"CX2P CONFIG CLIENT_ID=C1 MTU=1500 LOCAL_CIDR=10.0.0.2/24 "
                       b"GATEWAY_IP=10.0.0.1 ROUTE_CIDR=10.251.0.0/24\n")
        assert controls_down and all(pt == config_line for _, pt in controls_down)
        if encrypted:
            assert {t for t, _ in controls_down} == {spec_wire.CONFIG}
    else:
        assert controls_down == [], "a manual REGISTER gets no answer"
    # DATA is the bare inner IPv4 packet: C1's pings to C2 are in there.
    echo = [p for p in data_up if p[0] == 0x45 and p[9] == 1 and p[16:20] == bytes([10, 0, 0, 3])]
    assert len(echo) >= 5

"""v2 wire format: telling v2 from legacy on one port, parsers that never
raise on network input."""

import ipaddress

from hypothesis import given, settings, strategies as st

from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.testing.memlab import MemLab, Profile, ipv4, make_server

G = b"G" * 32


def test_legacy_datagrams_are_never_v2():
    legacy = [
        ipv4("10.0.0.2", "10.0.0.3", b"x"),                    # plaintext IPv4 data
        bytes([0x60]) + bytes(39),                            # plaintext IPv6 data
        b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n",      # plaintext control
    ]
    for t in (1, 2, 3):                                       # encrypted header
        legacy.append(b"CX2P" + bytes([t]) + bytes(60))
    for d in legacy:
        assert not wire.is_v2(d)


def test_every_v2_message_is_v2_and_not_legacy_magic():
    lab = MemLab(make_server(global_psk=G, profiles={"c": Profile("10.0.0.2/24", "10.0.0.1")},
                             load_threshold=0))
    lab.add("c", ClientSession([G], "c", wire.Request(auto=True)), ("192.0.2.1", 1))
    lab.start("c")
    lab.run(1.5)
    lab.to_server(wire.data_header(99, 0) + bytes(16), ("192.0.2.1", 1))
    kinds = {d[1] for _, _, _, d in lab.log}
    assert kinds == {wire.T_INIT, wire.T_RESP, wire.T_COOKIE, wire.T_DATA, wire.T_NOSESSION}
    for _, _, _, d in lab.log:
        assert wire.is_v2(d) and d[0] == 0xC2 and d[:4] != b"CX2P"
        assert d[0] >> 4 not in (4, 6)


def test_request_and_config_round_trip():
    req = wire.Request(auto=False, local_cidr=ipaddress.IPv4Interface("10.1.2.3/20"), mtu=1400)
    assert wire.decode_request(wire.encode_request(req)) == req
    cfg = wire.Config(ipaddress.IPv4Interface("10.0.0.2/24"), ipaddress.IPv4Address("10.0.0.1"),
                      [ipaddress.IPv4Network(f"10.{i}.0.0/16") for i in range(20)], 9000)
    back = wire.decode_config(wire.encode_config(cfg))
    assert back.routes == cfg.routes[:16] and back.mtu == 9000
    assert back.local_cidr == cfg.local_cidr and back.gateway_ip == cfg.gateway_ip
    ref = wire.decode_config(wire.encode_config(None, wire.Refusal(2, "no")))
    assert ref == wire.Refusal(2, "no")
    assert wire.decode_config(b"\x05\x02\x00\x01") is None   # MTU 1: out of range
    assert wire.decode_config(b"\x02\x05abc") is None        # truncated


def test_unknown_tlvs_are_ignored():
    assert wire.decode_request(b"\x01\x01\x01" + b"\x7f\x03abc") == wire.Request(auto=True)


def test_client_id_charset_and_length():
    assert wire.parse_init(wire.pack_init(wire.init_head(1, "a b"), bytes(48), G, None)) is None
    ok = wire.parse_init(wire.pack_init(wire.init_head(7, "C1.x:y-z_"), bytes(48), G, None))
    assert ok.client_id == "C1.x:y-z_" and ok.sender == 7


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 5))
def test_random_datagrams_never_raise(data, kind):
    srv = make_server(global_psk=G, profiles={})
    cli = ClientSession([G], "c", wire.Request(auto=True))
    cli.start(0.0)
    d = bytes([0xC2, kind]) + data if kind else data
    assert isinstance(srv.receive(d, ("192.0.2.1", 1), 0.0), list)
    assert isinstance(cli.receive(d, 0.0), list)


def _exchange():
    lab = MemLab(make_server(global_psk=G, profiles={"c": Profile("10.0.0.2/24", "10.0.0.1")}))
    lab.add("c", ClientSession([G], "c", wire.Request(auto=True)), ("192.0.2.1", 1))
    lab.start("c")
    lab.send_from("c", [ipv4("10.0.0.2", "10.0.0.9", b"payload")])
    lab.send_to("c", [ipv4("10.0.0.9", "10.0.0.2", b"payload")])
    return lab


LAB = _exchange()
MESSAGES = [d for _, _, _, d in LAB.log]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(MESSAGES) - 1), st.integers(0, 10**6), st.integers(1, 255))
def test_any_flipped_byte_is_rejected(which, pos, xor):
    msg = bytearray(MESSAGES[which])
    pos %= len(msg)
    msg[pos] ^= xor
    lab = _exchange()
    got_s, got_c = len(lab.server_got), len(lab.client_got["c"])
    peers = dict(lab.server.peers)
    lab.to_server(bytes(msg), ("192.0.2.1", 1))
    lab.to_client(bytes(msg), ("192.0.2.1", 1))
    # Nothing new is delivered and nobody is replaced; at most a handshake
    # restarts (a valid NOSESSION-like header), which changes no delivery.
    assert len(lab.server_got) == got_s and len(lab.client_got["c"]) == got_c
    assert lab.server.peers == peers


def test_sample_traffic_is_reproducible_and_complete():
    from camex.testing.memlab import sample_traffic
    a, b = sample_traffic(), sample_traffic()
    assert a == b and sample_traffic(b"other") != a
    kinds = {bytes.fromhex(h)[1] for _, h in a["datagrams"]}
    assert kinds == {wire.T_INIT, wire.T_COOKIE, wire.T_RESP, wire.T_DATA, wire.T_NOSESSION}
    assert len(a["keylog"]) == 4 and all(l.startswith("CAMEX_V2 ") for l in a["keylog"])

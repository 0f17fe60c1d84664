"""v2 handshake between ClientSession and V2Server, in memory."""

import ipaddress


from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.v2.events import Down, Refused, Up
from camex.v2.kdf import KeyStore, client_candidates, derive_psk
from camex.testing.memlab import MemLab, Profile, ipv4, make_server

G = b"G" * 32
K1 = b"1" * 32
PROFILES = {"cam1": Profile("10.0.0.2/24", "10.0.0.1", ["10.251.0.0/24"], 1400)}


def auto_lab(psk=G, cid="CAM1", **kw):
    lab = MemLab(make_server(global_psk=G, profiles=PROFILES, **kw))
    lab.add("c", ClientSession([psk], cid, wire.Request(auto=True)), ("192.0.2.10", 4000))
    return lab


def test_auto_handshake_brings_config_and_data_flows_both_ways():
    lab = auto_lab()
    lab.start("c")
    ups = [e for e in lab.client_events["c"] if isinstance(e, Up)]
    assert len(ups) == 1
    cfg = ups[0].config
    assert cfg.local_cidr == ipaddress.IPv4Interface("10.0.0.2/24")
    assert cfg.gateway_ip == ipaddress.IPv4Address("10.0.0.1")
    assert cfg.routes == [ipaddress.IPv4Network("10.251.0.0/24")]
    assert cfg.mtu == 1400
    # The server knows the client only once its first DATA (the keepalive
    # sent right after the RESP) proved it holds the keys.
    peer = lab.peer("c")
    assert peer is not None and peer.client_id == "CAM1"
    assert [e for e in lab.server_events if isinstance(e, Up)][0].peer is peer
    up_pkt = ipv4("10.0.0.2", "10.251.0.9", b"hello")
    lab.send_from("c", [up_pkt])
    assert lab.server_got[-1].packets == [up_pkt] and lab.server_got[-1].peer is peer
    down_pkt = ipv4("10.251.0.9", "10.0.0.2", b"world")
    lab.send_to("c", [down_pkt])
    assert lab.client_got["c"] == [down_pkt]


def test_wire_sizes_and_first_bytes():
    lab = auto_lab()
    lab.start("c")
    init = lab.sent("c2s", kind=wire.T_INIT)[0]
    resp = lab.sent("s2c", kind=wire.T_RESP)[0]
    ka = lab.sent("c2s", kind=wire.T_DATA)[0]
    assert init[:4] == b"\xc2\x01\x00\x00" and len(init) == wire.INIT_MIN + 4 + 3
    assert init[9:13] == b"CAM1"
    assert resp[:4] == b"\xc2\x02\x00\x00" and resp[4:8] == init[4:8]
    assert len(ka) == wire.DATA_MIN  # keepalive: header + tag only


def test_wrong_passphrase_gets_no_answer():
    lab = auto_lab(psk=b"x" * 32)
    lab.start("c")
    lab.run(3.0)
    assert lab.sent("s2c") == []
    assert lab.server.stats["bad_mac1"] >= 3  # one per retry, ~1 s apart
    assert not lab.clients["c"].established and lab.server.peers == {}


def test_client_id_is_bound_by_the_prologue():
    lab = auto_lab()
    c = lab.clients["c"]
    init = bytearray(c.start(lab.now)[0].data)
    init[9] = ord("D")  # CAM1 -> DAM1: same length, other ID
    acts = lab.server.receive(bytes(init), lab.addrs["c"], lab.now)
    assert acts == [] and lab.server.peers == {}


def test_auto_client_without_profile_is_refused():
    lab = auto_lab(cid="nobody")
    lab.start("c")
    refused = [e for e in lab.client_events["c"] if isinstance(e, Refused)]
    assert refused and refused[0].code == wire.ERR_CONFIG
    assert not lab.clients["c"].established and lab.server.peers == {}


def test_manual_client_and_pinned_address():
    lab = MemLab(make_server(global_psk=G, profiles=PROFILES))
    ok = ClientSession([G], "", wire.Request(local_cidr=ipaddress.IPv4Interface("10.0.0.7/24")))
    bad = ClientSession([G], "cam1", wire.Request(local_cidr=ipaddress.IPv4Interface("10.0.0.8/24")))
    lab.add("ok", ok, ("192.0.2.1", 1))
    lab.add("bad", bad, ("192.0.2.2", 2))
    lab.start("ok")
    lab.start("bad")
    assert ok.established and lab.peer("ok").key == "addr:10.0.0.7"
    assert [e.code for e in lab.client_events["bad"] if isinstance(e, Refused)] == [wire.ERR_ADDRESS]


def test_address_held_by_another_client_is_refused():
    lab = MemLab(make_server(global_psk=G))
    req = wire.Request(local_cidr=ipaddress.IPv4Interface("10.0.0.9/24"))
    lab.add("a", ClientSession([G], "a", req), ("192.0.2.1", 1))
    lab.add("b", ClientSession([G], "b", req), ("192.0.2.2", 2))
    lab.start("a")
    lab.start("b")
    assert lab.clients["a"].established
    assert [e.code for e in lab.client_events["b"] if isinstance(e, Refused)] == [wire.ERR_ADDRESS]
    assert lab.server.route(ipaddress.IPv4Address("10.0.0.9")).client_id == "a"


def test_per_client_passphrase_excludes_the_global_one():
    lab = MemLab(make_server(global_psk=G, client_psks={"cam1": K1}, profiles=PROFILES))
    lab.add("glob", ClientSession([G], "cam1", wire.Request(auto=True)), ("192.0.2.1", 1))
    lab.add("own", ClientSession([K1], "Cam1", wire.Request(auto=True)), ("192.0.2.2", 2))
    lab.start("glob")
    lab.run(2.0)
    assert not lab.clients["glob"].established
    lab.start("own")
    assert lab.clients["own"].established


def test_kdf_candidates_match_the_keystore():
    store = KeyStore(b"global-pass", {"Cam1": b"own-pass"})
    assert store.psk_for("CAM1") == derive_psk(b"own-pass", "cam1")
    assert store.psk_for("other") == derive_psk(b"global-pass")
    own = client_candidates(b"own-pass", "cam1")
    glob = client_candidates(b"global-pass", "other")
    assert store.psk_for("cam1") == own[0] and store.psk_for("other") == glob[1]
    # Salted per client: the same passphrase gives unrelated keys.
    assert derive_psk(b"p", "a") != derive_psk(b"p", "b") != derive_psk(b"p")
    assert KeyStore(None, {}).psk_for("x") is None


def test_client_offers_both_candidates_then_sticks_to_the_answered_one():
    store = KeyStore(b"global-pass", {"cam1": b"own-pass"})
    lab = MemLab(make_server(profiles=PROFILES))
    lab.server.psk_for = store.psk_for
    c = ClientSession(client_candidates(b"own-pass", "cam1"), "cam1", wire.Request(auto=True))
    lab.add("c", c, ("192.0.2.1", 1))
    lab.start("c")
    assert len(lab.sent("c2s", kind=wire.T_INIT)) == 2 and c.established
    assert c.good_psk == 0
    n = len(lab.sent("c2s", kind=wire.T_INIT))
    lab.run(125.0)  # one rekey
    assert len(lab.sent("c2s", kind=wire.T_INIT)) == n + 1


def test_forged_resp_does_not_spoil_the_handshake():
    lab = auto_lab()
    c = lab.clients["c"]
    init = c.start(lab.now)[0].data
    acts = lab.server.receive(init, lab.addrs["c"], lab.now)
    resp = acts[0].data
    forged = resp[:50] + bytes([resp[50] ^ 1]) + resp[51:]
    assert c.receive(forged, lab.now) == [] and not c.established
    out = c.receive(resp, lab.now)
    assert c.established and any(isinstance(e, Up) for e in out)


def test_reload_dropping_a_key_drops_the_peer():
    lab = auto_lab()
    lab.start("c")
    peer = lab.peer("c")
    acts = lab.server.reload(lambda cid: None, lab.server.authorize, lab.now)
    downs = [a for a in acts if isinstance(a, Down)]
    assert len(downs) == 1 and downs[0].peer is peer
    assert lab.server.peers == {} and lab.server.route(b"\x0a\x00\x00\x02") is None
    lab.server_actions(acts)          # the CLOSE makes the client knock again...
    lab.run(3.0)
    assert not lab.clients["c"].established   # ...in vain: its key is gone
    assert lab.server.stats["no_key"] >= 2


def test_reload_with_a_new_profile_pushes_the_new_config_at_once():
    lab = auto_lab()
    lab.start("c")
    new = {"cam1": Profile("10.0.0.2/24", "10.0.0.1", [], 1300)}
    srv2 = make_server(global_psk=G, profiles=new)
    acts = lab.server.reload(srv2.psk_for, srv2.authorize, lab.now)
    lab.server_actions(acts)
    ups = [e for e in lab.client_events["c"] if isinstance(e, Up)]
    assert [u.config.mtu for u in ups] == [1400, 1300]
    assert lab.clients["c"].established and lab.peer("c").grant.config.mtu == 1300

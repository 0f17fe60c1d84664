"""v2 server: cookies under load, roaming, identity binding, restarts."""

import ipaddress

from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.v2.events import Down, Roamed, Up
from camex.testing.memlab import MemLab, Profile, ipv4, make_server

G = b"G" * 32
PROFILES = {"cam1": Profile("10.0.0.2/24", "10.0.0.1"),
            "cam2": Profile("10.0.0.3/24", "10.0.0.1")}
BEHIND = {"cam1": ["192.168.50.0/24"]}
ADDR = ("192.0.2.10", 4000)


def new_lab(**kw):
    return MemLab(make_server(global_psk=G, profiles=PROFILES, behind=BEHIND, **kw))


def add(lab, name, cid, addr):
    lab.add(name, ClientSession([G], cid, wire.Request(auto=True)), addr)


# --- cookies ------------------------------------------------------------------

def test_under_load_the_server_answers_with_a_cookie_first(monkeypatch):
    lab = new_lab(load_threshold=0)   # every INIT counts as "under load"
    add(lab, "c", "cam1", ADDR)
    c = lab.clients["c"]
    init = c.start(lab.now)[0].data
    from camex.v2 import noise

    def no_dh(*a):
        raise AssertionError("DH work before the cookie check")

    with monkeypatch.context() as m:   # the server must not touch X25519 now
        m.setattr(noise.X25519PrivateKey, "generate", no_dh)
        m.setattr(noise, "dh", no_dh)
        lab.to_server(init, ADDR)
    first = lab.sent("s2c")
    assert len(first) == 1 and first[0][1] == wire.T_COOKIE
    init = lab.sent("c2s", kind=wire.T_INIT)[0]
    assert len(first[0]) == wire.COOKIE_LEN < len(init)     # no amplification
    assert lab.server.sessions == {} and lab.server.stats["handshakes"] == 0  # no DH, no state
    lab.run(1.5)                     # the retry carries mac2 and gets through
    assert lab.clients["c"].established
    assert lab.sent("c2s", kind=wire.T_INIT)[-1][-16:] != bytes(16)


def _hammer(lab, name, addr, times):
    """INITs with a valid cookie (mac2) from `addr`, all in the current
    second: a PSK holder hammering, or many clients behind one NAT."""
    c = lab.clients[name]
    for _ in range(times):
        for d in c._send_inits(lab.now):
            lab.server.receive(d, addr, lab.now)


def _cookie_holder(lab, name, cid, addr):
    add(lab, name, cid, addr)
    lab.start(name)
    lab.run(1.5)                 # INIT -> COOKIE -> INIT with mac2 -> RESP


def test_under_load_a_cookie_holder_is_still_rate_limited_per_address():
    from camex.v2.server import INITS_PER_ADDRESS
    lab = new_lab(load_threshold=0, spare_inits=0)
    _cookie_holder(lab, "c", "cam1", ADDR)
    lab.now = float(int(lab.now) + 1)           # a fresh second
    before = lab.server.stats["handshakes"]
    _hammer(lab, "c", ADDR, 3 * INITS_PER_ADDRESS)
    assert lab.server.stats["handshakes"] - before == INITS_PER_ADDRESS
    assert lab.server.stats["rate_limited"] == 2 * INITS_PER_ADDRESS


def test_under_load_the_spare_handshakes_go_to_the_address_that_needs_them():
    # A site of many clients behind one NAT address gets its own 10 a
    # second and the second's spare ones; another address still gets its
    # own 10 when the spare is gone, and the next second brings a new spare.
    from camex.v2.server import INITS_PER_ADDRESS
    spare = 25
    lab = new_lab(load_threshold=0, spare_inits=spare)
    other = ("198.51.100.20", 4000)
    _cookie_holder(lab, "site", "cam1", ADDR)
    _cookie_holder(lab, "elsewhere", "cam2", other)
    stats = lab.server.stats
    lab.now = float(int(lab.now) + 1)
    before, limited = stats["handshakes"], stats["rate_limited"]
    _hammer(lab, "site", ADDR, 3 * (INITS_PER_ADDRESS + spare))
    assert stats["handshakes"] - before == INITS_PER_ADDRESS + spare
    _hammer(lab, "elsewhere", other, 2 * INITS_PER_ADDRESS)
    assert stats["handshakes"] - before == 2 * INITS_PER_ADDRESS + spare
    assert stats["rate_limited"] - limited == 2 * (INITS_PER_ADDRESS + spare) + INITS_PER_ADDRESS
    lab.now += 1.0
    _hammer(lab, "site", ADDR, 3 * (INITS_PER_ADDRESS + spare))
    assert stats["handshakes"] - before == 3 * INITS_PER_ADDRESS + 2 * spare


def test_a_cookie_is_useless_from_another_address():
    lab = new_lab(load_threshold=0)
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    lab.run(1.5)
    assert lab.clients["c"].established
    with_mac2 = lab.sent("c2s", kind=wire.T_INIT)[-1]
    out = lab.server.receive(with_mac2, ("198.51.100.7", 5555), lab.now)
    assert len(out) == 1 and out[0].data[1] == wire.T_COOKIE


def test_no_cookie_for_a_wrong_passphrase():
    lab = new_lab(load_threshold=0)
    lab.add("x", ClientSession([b"x" * 32], "cam1", wire.Request(auto=True)), ADDR)
    lab.start("x")
    assert lab.sent("s2c") == []


def test_below_the_threshold_no_cookie_is_needed():
    lab = new_lab(load_threshold=5)
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    assert lab.clients["c"].established and lab.server.stats["cookie_sent"] == 0


# --- roaming -------------------------------------------------------------------

def test_endpoint_moves_only_after_an_authenticated_fresh_packet():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    peer = lab.peer("c")
    c = lab.clients["c"]
    d1 = c.encrypt([ipv4("10.0.0.2", "10.0.0.3")], lab.now)[0]
    lab.to_server(d1, ADDR)
    new = ("198.51.100.20", 6000)
    # A replay and a forgery from the new address move nothing.
    lab.server.receive(d1, new, lab.now)
    lab.server.receive(d1[:20] + bytes(len(d1) - 20), new, lab.now)
    assert peer.endpoint == ADDR
    # The client's next real packet from there does (NAT rebinding).
    lab.addrs["c"] = new
    lab.send_from("c", [ipv4("10.0.0.2", "10.0.0.3")])
    assert peer.endpoint == new
    assert any(isinstance(e, Roamed) and e.new == new for e in lab.server_events)
    lab.send_to("c", [ipv4("10.0.0.3", "10.0.0.2")])
    assert lab.sent("s2c", kind=wire.T_DATA)[-1] and lab.client_got["c"][-1][16:20] == bytes([10, 0, 0, 2])


def test_an_init_from_elsewhere_does_not_move_the_endpoint():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    peer = lab.peer("c")
    impostor = ClientSession([G], "cam1", wire.Request(auto=True))
    init = impostor.start(lab.now)[0].data
    lab.server.receive(init, ("203.0.113.9", 1), lab.now)  # answered, not confirmed
    assert peer.endpoint == ADDR and lab.server.peers["cam1"] is peer


# --- identity binding ------------------------------------------------------------

def test_inner_source_must_be_the_clients_own_or_behind_it():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    peer = lab.peer("c")
    own = ipv4("10.0.0.2", "10.0.0.3")
    behind = ipv4("192.168.50.7", "10.0.0.3")
    other = ipv4("10.0.0.3", "10.0.0.1")        # cam2's address
    outside = ipv4("192.168.51.7", "10.0.0.3")
    v6 = bytes([0x60]) + bytes(39)
    lab.send_from("c", [own, behind, other, outside, v6])
    assert lab.server_got[-1].packets == [own, behind]
    assert peer.stats["spoofed"] == 3
    assert peer.allows_source(own) and not peer.allows_source(other)


def test_route_finds_peers_by_address_and_behind_networks():
    lab = new_lab()
    add(lab, "a", "cam1", ADDR)
    add(lab, "b", "cam2", ("192.0.2.11", 4001))
    lab.start("a")
    lab.start("b")
    r = lab.server.route
    assert r(ipaddress.IPv4Address("10.0.0.2")).client_id == "cam1"
    assert r(bytes([10, 0, 0, 3])).client_id == "cam2"
    assert r(bytes([192, 168, 50, 99])).client_id == "cam1"
    assert r(bytes([10, 0, 0, 4])) is None


def test_client_to_client_relay_through_the_server():
    lab = new_lab()
    add(lab, "a", "cam1", ADDR)
    add(lab, "b", "cam2", ("192.0.2.11", 4001))
    lab.start("a")
    lab.start("b")
    p = ipv4("10.0.0.2", "10.0.0.3", b"relay")
    lab.send_from("a", [p])
    for pk in lab.server_got[-1].packets:
        lab.send_to("b", [pk]) if lab.server.route(pk[16:20]) is lab.peer("b") else None
    assert lab.client_got["b"] == [p]


# --- restart and shutdown ----------------------------------------------------------

def restart(lab):
    old = lab.server
    lab.server = make_server(global_psk=G, profiles=PROFILES, behind=BEHIND)
    return old


def test_graceful_restart_client_is_back_within_a_retry_of_the_return():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    bye = lab.server.close(lab.now)
    lab.server_up = False        # the old process is gone once CLOSE is out
    lab.server_actions(bye)      # CLOSE reaches the client, its INIT is lost
    assert any(isinstance(e, Down) for e in lab.client_events["c"])
    assert not lab.clients["c"].established
    restart(lab)
    lab.run(5.0)                                           # down for 5 s
    lab.server_up = True
    back = lab.now
    while not lab.clients["c"].established:
        lab.run(0.05)
    assert lab.now - back <= 1.2
    assert lab.peer("c") is not None


def test_crash_restart_active_client_recovers_through_nosession():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    lab.server_up = False
    restart(lab)                 # state lost, no CLOSE
    lab.run(5.0)
    lab.server_up = True
    back = lab.now
    # The first data packet gets an 8-byte NOSESSION; the client re-handshakes.
    lab.send_from("c", [ipv4("10.0.0.2", "10.0.0.3")])
    assert lab.sent("s2c")[-3][1] == wire.T_NOSESSION
    assert lab.peer("c") is not None and lab.now - back < 0.01
    lab.send_from("c", [ipv4("10.0.0.2", "10.0.0.3", b"again")])
    assert lab.server_got[-1].packets[0].endswith(b"again")


def test_crash_restart_idle_client_comes_back_with_its_keepalive():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    lab.server_up = False
    restart(lab)
    lab.run(2.0)
    lab.server_up = True
    lab.run(30.0)                # at most one keepalive interval
    assert lab.peer("c") is not None and lab.clients["c"].established


def test_nosession_is_rate_limited_and_small():
    lab = new_lab()
    fake = wire.data_header(1234, 0) + bytes(16)
    outs = [lab.server.receive(fake, ADDR, lab.now) for _ in range(10)]
    sent = [a for o in outs for a in o]
    assert len(sent) == 1 and len(sent[0].data) == wire.NOSESSION_LEN < len(fake)


def test_forged_nosession_only_triggers_an_early_handshake():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    c = lab.clients["c"]
    assert c.receive(wire.pack_nosession(c.current.remote_index ^ 1), lab.now) == []
    out = c.receive(wire.pack_nosession(c.current.remote_index), lab.now)
    assert [d.data[1] for d in out] == [wire.T_INIT]
    assert c.established          # the old session keeps working meanwhile
    assert c.receive(wire.pack_nosession(c.current.remote_index), lab.now) == []


def test_client_close_frees_the_address_at_once():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    for d in lab.clients["c"].close(lab.now):
        lab.to_server(d, ADDR)
    assert lab.server.peers == {} and lab.server.route(bytes([10, 0, 0, 2])) is None
    assert any(isinstance(e, Down) for e in lab.server_events)


def test_silent_server_makes_the_client_knock_again():
    lab = new_lab()
    add(lab, "c", "cam1", ADDR)
    lab.start("c")
    lab.server_up = False        # vanished without a word, no restart yet
    lab.run(20.0, each=lambda lab: lab.send_from("c", [ipv4("10.0.0.2", "10.0.0.3")]))
    inits = lab.sent("c2s", kind=wire.T_INIT)
    assert len(inits) >= 4       # dead after 15 s, then every ~1 s
    gaps = [b[0] - a[0] for a, b in zip(
        [x for x in lab.log if x[1] == "c2s" and x[3][1] == wire.T_INIT][1:],
        [x for x in lab.log if x[1] == "c2s" and x[3][1] == wire.T_INIT][2:])]
    assert gaps and all(0.95 <= g <= 1.25 for g in gaps)
    assert not any(isinstance(e, Up) for e in lab.client_events["c"][1:])


def test_reload_changing_only_networks_behind_keeps_the_session():
    lab = new_lab()
    add(lab, "a", "cam1", ADDR)
    lab.start("a")
    peer = lab.peer("a")
    assert lab.server.route(bytes([192, 168, 50, 1])) is peer
    assert lab.server.route(bytes([172, 16, 0, 1])) is None
    other = make_server(global_psk=G, profiles=PROFILES, behind={"cam1": ["172.16.0.0/16"]})
    acts = lab.server.reload(other.psk_for, other.authorize, lab.now)
    assert [type(a) for a in acts] == [Up] and lab.peer("a") is peer
    assert lab.server.route(bytes([172, 16, 0, 1])) is peer
    assert lab.server.route(bytes([192, 168, 50, 1])) is None
    assert peer.allows_source(ipv4("172.16.3.4", "10.0.0.3"))
    assert not peer.allows_source(ipv4("192.168.50.7", "10.0.0.3"))

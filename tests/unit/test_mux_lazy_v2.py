"""A server that speaks both protocols builds its v2 half only when a v2
client comes (ServerMux(lazy_v2=True), as the daemon runs it beside
legacy): until then it serves legacy clients alone, and what it says and
does for v2 is what an eagerly built half would."""

from types import SimpleNamespace

from camex.daemon.config import parse_config
from camex.daemon.server_state_io import ServerState
from camex.legacy import codec
from camex.legacy.client import LegacyClient
from camex.v2 import wire
from tests.support.mux_world import (A1, A2, A3, C2PASS, DB, PASS, World, ip_packet,
                                     relays_both_ways, v2_client)


def test_legacy_clients_alone_never_start_it():
    w = World(lazy_v2=True)
    c2 = LegacyClient(auto=True, client_id="C2", key=codec.derive_key(C2PASS))
    w.add(A2, c2)
    assert str(c2.config.address) == "10.0.0.3/24"
    c2.tun_packet(ip_packet("10.0.0.3", "10.0.0.9"), w.now)   # no one holds .9
    w.pump()
    assert w.server.v2 is None
    assert w.server.v2_counters() == {"v2_cookies_sent": 0, "v2_handshakes": 0}
    assert w.server.drops() == {"no-route": 1}


def test_the_first_v2_client_starts_it_and_both_protocols_relay():
    w = World(lazy_v2=True)
    c2 = LegacyClient(auto=True, client_id="C2", key=codec.derive_key(C2PASS))
    w.add(A2, c2)
    c1 = v2_client("C1", PASS)
    w.add(A1, c1)
    assert w.server.v2 is not None
    assert c1.protocol == "v2" and str(c1.config.address) == "10.0.0.2/24"
    relays_both_ways(w, c1, c2)
    assert w.server.v2_counters()["v2_handshakes"] == 1
    # The legacy client's address stays its own against a v2 claim, as with
    # a half built at start.
    thief = v2_client("", PASS, auto=False, local=c2.config.address)
    w.add(A3, thief)
    assert not thief.v2.established


def test_its_tso_limit_is_known_before_it_starts():
    # The daemon caps its TUN's TSO size at start, before any v2 client.
    assert World(lazy_v2=True).server.tso_max() == World().server.tso_max()
    assert World(lazy_v2=True, v2=False).server.tso_max() is None


def test_a_reload_before_it_starts_takes_the_new_passphrases():
    w = World(lazy_v2=True)
    w.server.reload(parse_config(DB + "\n[client C3]\nlocal_cidr=10.0.0.4/24\n"
                                 "psk=third-client-secret\n", "t.conf"),
                    PASS, w.now)
    c3 = v2_client("C3", b"third-client-secret")
    w.add(A3, c3)
    assert c3.protocol == "v2" and c3.v2.established


def test_v2_clients_in_the_state_file_start_it_and_are_asked_back(tmp_path):
    opts = SimpleNamespace(state_dir=str(tmp_path), port=7000, encrypt=True)
    before = World()
    before.add(A1, v2_client("C1", PASS))
    saved = ServerState(before.server, opts)
    saved.file.prepare()
    saved.save(before.now)
    after = World(lazy_v2=True)
    ServerState(after.server, opts).load(after.now)
    assert after.server.v2 is not None
    # One NOSESSION to C1's endpoint: "handshake again, the server restarted".
    assert [(d[0], addr) for d, addr in after.server.outbox] == [(wire.MARK, A1)]


def test_a_whole_bulk_frame_as_its_first_v2_datagram_starts_it():
    # A GRO read that is one whole BULK frame reaches the v2 half without
    # the per-datagram path (FastReceiver.whole): it starts it too, and the
    # receiver the daemon holds is the v2 half's from then on.
    from camex.daemon.config import parse_config as parse
    from camex.tunnel.server import ServerMux
    from tests.support.v2_bulk_world import CONF, PW, World as BulkWorld, frame, tcp_super, v2

    w = BulkWorld(local_delivery=True)
    c1 = w.add(A1, v2("C1"))
    f = frame(c1, tcp_super("10.0.0.2", "10.0.0.1", 30000))
    mux = ServerMux(passphrase=PW, encrypt=True, config=parse(CONF, "t.conf"), lazy_v2=True)
    receiver = mux.datagram_received
    assert receiver.whole(b"".join(f), len(f[0]), A1, w.now)
    assert mux.v2 is not None and receiver.frames is mux.v2.server.frames
    # Its session lives in another server: this one has none for it.
    assert mux.to_tun == [] and mux.v2.server.stats["bulk_rx"] == 0


def test_datagrams_read_alone_take_the_flat_path_once_it_has_started():
    """The daemons enter a datagram read alone by `datagram_received.one`:
    before the start that is the protocol dispatch (which starts the half
    on the first v2 datagram), after it v2's flat receive, and both
    protocols relay either way."""
    w = World(lazy_v2=True)
    fast = w.server.datagram_received
    assert fast.one == w.server._datagram_received

    class ByOne:
        def __call__(self, d, addr, now):
            fast.one(d, addr, now)

    w.server.datagram_received = ByOne()
    c2 = LegacyClient(auto=True, client_id="C2", key=codec.derive_key(C2PASS))
    w.add(A2, c2)
    assert w.server.v2 is None and str(c2.config.address) == "10.0.0.3/24"
    c1 = v2_client("C1", PASS)
    w.add(A1, c1)
    assert w.server.v2 is not None and c1.protocol == "v2"
    assert fast.one != w.server._datagram_received      # v2's flat receive now
    relays_both_ways(w, c1, c2)

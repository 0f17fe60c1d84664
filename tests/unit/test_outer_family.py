"""The outer family in the I/O-free cores: default MTUs and v2 datagram
sizes over IPv4 and IPv6 (40-byte header: 20 bytes less room), a client
that learns the family at connect time, and a v2 server that sizes a
peer's BULK fragments by its endpoint's family."""

import ipaddress

from camex.daemon.config import parse_config
from camex.legacy.client import LegacyClient, default_mtu
from camex.tunnel.client import AutoClientCore
from camex.v2 import wire
from camex.v2.core import V2ClientCore, V2ServerCore, default_mtu as v2_default_mtu
from camex.v2.framing import datagrams_of
from tests.support.v2_pair import CONF, PW, Wire

V6_A, V6_B = ("2001:db8::2", 4001), ("2001:db8::3", 4002)
LOCAL = ipaddress.IPv4Interface("10.0.0.2/24")


def test_default_mtus_by_family():
    assert (default_mtu(True), default_mtu(False), v2_default_mtu()) == (1429, 1472, 1438)
    assert (default_mtu(True, True), default_mtu(False, True), v2_default_mtu(True)) == \
        (1409, 1452, 1418)


def test_a_manual_legacy_client_reconfigures_when_the_socket_is_ipv6():
    c = LegacyClient(auto=False, local_cidr=LOCAL, key=b"k" * 32)
    c.start(0.0)
    c.outer_family(True)
    assert [e.mtu for e in c.events] == [1429, 1409]
    c.outer_family(True)     # no change, no event
    assert len(c.events) == 2


def test_minus_t_wins_over_the_family():
    c = LegacyClient(auto=False, local_cidr=LOCAL, mtu=1300)
    c.start(0.0)
    c.outer_family(True)
    assert [e.mtu for e in c.events] == [1300]


def test_v2_client_datagrams_and_mtu_follow_the_family():
    c = V2ClientCore(auto=False, passphrase=PW, local_cidr=LOCAL)
    c.outer_family(True)        # an IPv6 literal: known before start
    c.start(0.0)
    assert [e.mtu for e in c.events] == [1418]
    assert c.session.max_datagram == 1452
    assert c.tso_max() == wire.bulk_tso_max(1452) < wire.bulk_tso_max(1472)


def test_auto_core_passes_the_family_to_a_later_legacy_fallback():
    v2 = V2ClientCore(auto=False, passphrase=PW, local_cidr=LOCAL)
    core = AutoClientCore(v2, lambda: LegacyClient(auto=False, local_cidr=LOCAL, key=b"k" * 32),
                          fallback_after=1.0)
    core.outer_family(True)
    core.start(0.0)
    core.connected(0.0)
    core.on_timer(2.0)          # no v2 answer: legacy
    assert core.protocol == "legacy" and core.config.mtu == 1409


def setup_v6():
    srv = V2ServerCore(global_passphrase=PW, config=parse_config(CONF))
    c1 = V2ClientCore(auto=True, passphrase=PW, client_id="cam1")
    c2 = V2ClientCore(auto=True, passphrase=b"cam2-own-secret", client_id="CAM2")
    c1.outer_family(True)
    w = Wire(srv, {V6_A: c1, ("192.0.2.3", 4003): c2})
    for c in (c1, c2):
        c.start(w.now)
        c.connected(w.now)
    w.pump()
    return w, srv, c1, c2


def test_v2_server_cuts_bulk_frames_per_peer_family():
    w, srv, c1, c2 = setup_v6()
    w.tick(3.0)
    assert c1.config.mtu == 1400   # the profile's mtu=1400 fits IPv6 too
    peers = {p.endpoint: p for p in srv.server.peers.values()}
    assert set(peers) == {V6_A, ("192.0.2.3", 4003)}
    big = bytes(range(256)) * 200    # records of one big payload: many fragments
    for ep, size in ((V6_A, 1452), (("192.0.2.3", 4003), 1472)):
        out = srv.server.send_frame(peers[ep], [(0, big[:20000])], w.now)
        dgrams = [d for run, _ep in out for d in datagrams_of([run])]
        assert max(map(len, dgrams)) == size, ep
    # camex status: the bracketed form.
    assert sorted(c["endpoint"] for c in srv.status(w.now)) == ["192.0.2.3:4003",
                                                               "[2001:db8::2]:4001"]

"""v2 cores with the legacy cores' interface, as the daemons drive them."""

import ipaddress
import logging

from camex.daemon.config import parse_config
from camex.legacy.client import IfConfig, LegacyClient
from camex.legacy import codec
from camex.v2 import wire
from camex.v2.core import DEFAULT_MTU, V2ClientCore, V2ServerCore
from camex.tunnel.client import AutoClientCore
from camex.testing.memlab import ipv4
from tests.support.v2_pair import A1, CONF, PW, Wire, connect


def setup(local_delivery=False, relay_other=None):
    cfg = parse_config(CONF)
    srv = V2ServerCore(global_passphrase=PW, config=cfg, local_delivery=local_delivery,
                       relay_other=relay_other)
    c1 = V2ClientCore(auto=True, passphrase=PW, client_id="cam1")
    c2 = V2ClientCore(auto=True, passphrase=b"cam2-own-secret", client_id="CAM2")
    w = connect(srv, c1, c2)
    return w, srv, c1, c2


def test_auto_clients_get_their_interface_config(caplog):
    with caplog.at_level(logging.INFO, logger="camex"):
        w, srv, c1, c2 = setup()
        w.tick(3.0)
    assert c1.events == [IfConfig(ipaddress.IPv4Interface("10.0.0.2/24"), 1400,
                                  ipaddress.IPv4Address("10.0.0.1"),
                                  [ipaddress.IPv4Network("10.251.0.0/24")])]
    assert c2.config.address == ipaddress.IPv4Interface("10.0.0.3/24")
    assert c2.config.mtu == DEFAULT_MTU == 1438
    assert caplog.text.count("registered (v2, auto)") == 2
    # Each client offered two candidate keys (own section, global); the
    # one the server does not hold is counted, not reported.
    assert srv.drops["no-key"] == 2 and "no key opens it" not in caplog.text


def test_client_to_client_and_to_the_server_tun():
    w, srv, c1, c2 = setup(local_delivery=True)
    p = ipv4("10.0.0.2", "10.0.0.3", b"hi")
    c1.tun_packet(p, w.now)
    w.pump()
    assert c2.to_tun == [p]
    q = ipv4("10.0.0.3", "10.0.0.1", b"to the server host")
    c2.tun_packet(q, w.now)
    w.pump()
    assert srv.to_tun == [q]
    r = ipv4("10.0.0.1", "10.0.0.2", b"from the server host")
    srv.tun_packet(r, w.now)
    w.pump()
    assert c1.to_tun == [r]


def test_packets_for_legacy_clients_go_to_relay_other():
    taken = []
    w, srv, c1, c2 = setup(relay_other=lambda p: taken.append(p) or True)
    p = ipv4("10.0.0.2", "10.0.0.50", b"to a legacy client")
    c1.tun_packet(p, w.now)
    w.pump()
    assert taken == [p]
    assert srv.deliver(ipv4("10.0.0.50", "10.0.0.3"), w.now)       # legacy -> v2 client
    assert not srv.deliver(ipv4("10.0.0.50", "10.0.0.99"), w.now)  # nobody
    w.pump()
    assert len(c2.to_tun) == 1


def test_spoofed_inner_source_is_dropped():
    w, srv, c1, c2 = setup()
    c1.tun_packet(ipv4("10.0.0.3", "10.0.0.3", b"I am cam2"), w.now)  # not its address
    w.pump()
    assert c2.to_tun == [] and srv.server.stats["spoofed"] == 1


def test_wrong_passphrase_is_logged_throttled(caplog):
    cfg = parse_config(CONF)
    srv = V2ServerCore(global_passphrase=PW, config=cfg)
    bad = V2ClientCore(auto=True, passphrase=b"wrong", client_id="cam1")
    w = Wire(srv, {A1: bad})
    with caplog.at_level(logging.INFO, logger="camex"):
        bad.start(w.now)
        bad.connected(w.now)
        w.pump()
        w.tick(5.0)
    assert caplog.text.count("no key opens it") == 1
    assert srv.drops["no-key"] >= 5 and bad.config is None


def test_reload_revoking_a_per_client_passphrase():
    w, srv, c1, c2 = setup()
    srv.reload(parse_config(CONF.replace("psk = cam2-own-secret", "psk = rotated")), PW, w.now)
    w.pump()
    w.tick(3.0)
    assert [p.client_id for p in srv.server.peers.values()] == ["cam1"]
    assert not c2.established


def test_manual_client_configures_at_start_with_the_v2_mtu():
    c = V2ClientCore(auto=False, passphrase=PW, local_cidr=ipaddress.IPv4Interface("10.0.0.9/24"))
    c.start(0.0)
    assert c.events[0].mtu == 1438 and c.events[0].address.ip == ipaddress.IPv4Address("10.0.0.9")


# --- --protocol auto -------------------------------------------------------

def legacy_factory():
    return LegacyClient(auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.9/24"),
                        key=codec.derive_key(PW))


def manual_v2():
    return V2ClientCore(auto=False, passphrase=PW, local_cidr=ipaddress.IPv4Interface("10.0.0.9/24"))


def test_auto_falls_back_to_legacy_when_v2_is_never_answered():
    core = AutoClientCore(manual_v2(), legacy_factory)
    core.start(0.0)
    core.connected(0.0)
    sent = list(core.to_net)
    core.to_net.clear()
    assert sent and all(wire.is_v2(d) for d in sent)
    now = 0.0
    while core.protocol == "v2":
        now += 0.1
        if core.next_deadline() <= now:
            core.on_timer(now)
        assert now < 3.5
    assert now >= 3.0
    assert [d[:4] for d in core.to_net] == [b"CX2P"]          # a legacy REGISTER
    core.to_net.clear()
    while now < 40.0:                                        # a v2 probe within 30 s
        now += 0.5
        if core.next_deadline() <= now:
            core.on_timer(now)
    assert any(wire.is_v2(d) for d in core.to_net)


def test_auto_moves_back_to_v2_when_a_probe_is_answered():
    srv = V2ServerCore(global_passphrase=PW, config=None)
    core = AutoClientCore(manual_v2(), legacy_factory, fallback_after=3.0)
    core.start(0.0)
    core.connected(0.0)
    core.to_net.clear()                       # the server was down at our start
    now = 0.0
    while core.protocol == "v2":
        now += 0.1
        if core.next_deadline() <= now:
            core.on_timer(now)
    core.to_net.clear()
    w = Wire(srv, {A1: core})
    w.now = now
    core.events.clear()
    w.tick(31.0, step=0.5)
    assert core.protocol == "v2" and core.v2.established
    assert srv.server.peers and core.events[-1].mtu == 1438


def test_auto_never_falls_back_once_v2_answered():
    srv = V2ServerCore(global_passphrase=PW, config=None)
    core = AutoClientCore(manual_v2(), legacy_factory)
    w = Wire(srv, {A1: core})
    core.start(w.now)
    core.connected(w.now)
    w.pump()
    assert core.protocol == "v2" and core.v2.established
    w.server = V2ServerCore(global_passphrase=b"other", config=None)  # now nothing answers
    w.tick(10.0)
    assert core.protocol == "v2"


def test_auto_core_lists_stay_the_active_cores_when_the_loop_rebinds_them():
    srv = V2ServerCore(global_passphrase=PW, config=None)
    core = AutoClientCore(manual_v2(), legacy_factory)
    w = Wire(srv, {A1: core})
    core.start(w.now)
    events, core.events = core.events, []       # what the daemon's flush does
    assert events and core.events is core.v2.events
    core.connected(w.now)
    w.pump()
    core.to_tun = []
    srv.deliver(ipv4("10.0.0.1", "10.0.0.9", b"x"), w.now)
    w.pump()
    assert core.v2.to_tun is core.to_tun and len(core.to_tun) == 1
    assert "events" not in vars(core) and "to_tun" not in vars(core)

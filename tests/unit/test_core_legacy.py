"""The legacy client and server cores, wired together in memory.

No sockets, no TUN: datagrams move between the cores by hand, with a fake
clock, so every flaw of the C implementation can be replayed exactly.
"""

import ipaddress

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from camex.daemon.config import parse_config
from camex.legacy.client import IfConfig, Reconnect, default_mtu
from camex.legacy.server import IDLE_TIMEOUT, LegacyServer
from camex.legacy import codec
from tests.support.legacy_net import (
    A1, A2, EVIL, GLOBAL, C2PSK, DB, ip_packet, Net, manual_pair)


@pytest.fixture(autouse=True, params=["one-by-one", "batched"])
def delivery(request, monkeypatch):
    """Every test twice: datagrams one at a time, and as the server
    daemon's recvmmsg path delivers them (LegacyServer.relay_batch first)."""
    monkeypatch.setattr(Net, "batched", request.param == "batched")
    return request.param


@pytest.mark.parametrize("psk", [None, GLOBAL])
def test_manual_clients_relay_both_ways(psk):
    net, c1, c2 = manual_pair(psk)
    assert c1.events == [IfConfig(ipaddress.IPv4Interface("10.0.0.2/24"), default_mtu(psk is not None))]
    ping = ip_packet("10.0.0.2", "10.0.0.3")
    c1.tun_packet(ping, net.now)
    net.up(c1, A1)
    net.down({A1: c1, A2: c2})
    assert c2.to_tun == [ping]
    pong = ip_packet("10.0.0.3", "10.0.0.2")
    c2.tun_packet(pong, net.now)
    net.up(c2, A2)
    net.down({A1: c1, A2: c2})
    assert c1.to_tun == [pong]


def test_default_mtu_leaves_room_for_overhead():
    assert default_mtu(False) + 28 == 1500
    assert default_mtu(True) + 28 + 43 == 1500


def test_auto_clients_get_their_profile_and_racing_clients_both_work():
    net = Net(encrypt=True, config_text=DB)
    c1 = net.client(GLOBAL, auto=True, client_id="C1")
    c2 = net.client(C2PSK, auto=True, client_id="c2")  # IDs match case-insensitively
    # Both REGISTERs arrive before either answer: the C server's 0.0.0.0 race.
    net.up(c1, A1)
    net.up(c2, A2)
    net.down({A1: c1, A2: c2})
    assert c1.config.address == ipaddress.IPv4Interface("10.0.0.2/24")
    assert c1.config.gateway == ipaddress.IPv4Address("10.0.0.1")
    assert c1.config.mtu == 1400
    assert c1.config.routes == [ipaddress.IPv4Network("10.251.0.0/24")]
    assert c2.config.address == ipaddress.IPv4Interface("10.0.0.3/24")
    pkt = ip_packet("10.0.0.3", "10.0.0.2")
    c2.tun_packet(pkt, net.now)
    net.up(c2, A2)
    net.down({A1: c1, A2: c2})
    assert c1.to_tun == [pkt]


def test_config_wire_bytes_match_the_capture():
    net = Net(encrypt=False, config_text=DB.replace("mtu=1400", "mtu=1500"))
    c1 = net.client(None, auto=True, client_id="C1")
    assert c1.to_net == [b"CX2P REGISTER MODE=AUTO CLIENT_ID=C1\n"]
    net.up(c1, A1)
    assert net.server.outbox == [(b"CX2P CONFIG CLIENT_ID=C1 MTU=1500 LOCAL_CIDR=10.0.0.2/24 "
                                  b"GATEWAY_IP=10.0.0.1 ROUTE_CIDR=10.251.0.0/24\n", A1)]


def test_wrong_passphrase_is_rejected_with_a_reason():
    net = Net(encrypt=True)
    bad = net.client(b"not-the-secret", auto=False,
                     local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"))
    net.up(bad, A1)
    assert net.server.by_endpoint == {}
    assert net.server.drops["auth"] == 1


def test_spoofed_plaintext_data_does_not_hijack(caplog):
    """Flaw 1: the C server learns addresses from inner sources."""
    net, c1, c2 = manual_pair(None)
    # The attacker sends DATA claiming to be 10.0.0.2, then something for it.
    net.receive(ip_packet("10.0.0.2", "10.0.0.3"), EVIL, net.now)
    assert net.server.outbox == []
    c2.tun_packet(ip_packet("10.0.0.3", "10.0.0.2"), net.now)
    net.up(c2, A2)
    assert [addr for _, addr in net.server.outbox] == [A1]


def test_registered_client_cannot_spoof_another_source():
    net, c1, c2 = manual_pair(GLOBAL)
    c1.tun_packet(ip_packet("10.0.0.9", "10.0.0.3"), net.now)
    net.up(c1, A1)
    assert net.server.outbox == []
    assert net.server.drops["spoofed-source"] == 1


def test_replayed_data_from_another_endpoint_moves_nothing():
    net, c1, c2 = manual_pair(GLOBAL)
    c1.tun_packet(ip_packet("10.0.0.2", "10.0.0.3"), net.now)
    net.up(c1, A1)
    net.server.outbox.clear()
    data, _ = net.captured[-1]
    net.receive(data, EVIL, net.now)
    assert net.server.by_ip[ipaddress.IPv4Address("10.0.0.2").packed].endpoint == A1
    assert net.server.outbox == []
    # And from the right endpoint the replay is dropped by the window too.
    net.receive(data, A1, net.now)
    assert net.server.outbox == []
    assert net.server.drops["replay"] == 2


def test_replayed_register_changes_nothing_and_reopens_no_replay():
    """Flaw 2: a replayed REGISTER reset the C server's window."""
    net, c1, c2 = manual_pair(GLOBAL)
    register, _ = net.captured[0]
    c1.tun_packet(ip_packet("10.0.0.2", "10.0.0.3"), net.now)
    net.up(c1, A1)
    old_data, _ = net.captured[-1]
    net.server.outbox.clear()
    for src in (EVIL, A1):
        net.receive(register, src, net.now)
        net.receive(old_data, src, net.now)
    assert net.server.outbox == []
    assert net.server.by_ip[ipaddress.IPv4Address("10.0.0.2").packed].endpoint == A1
    assert EVIL not in net.server.by_endpoint


def test_key_of_one_client_cannot_claim_another_clients_id_or_address():
    """Flaw 3: any key was accepted for any client ID or address."""
    net = Net(encrypt=True, config_text=DB)
    # The global key asks for C2's profile (C2 has its own psk).
    evil = net.client(GLOBAL, auto=True, client_id="C2")
    net.up(evil, EVIL)
    assert net.server.by_endpoint == {} and net.server.outbox == []
    # The global key asks for C2's address in manual mode.
    evil2 = net.client(GLOBAL, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.3/24"))
    net.up(evil2, EVIL)
    assert net.server.by_endpoint == {}
    # C2's key asks for C1's profile or another address.
    evil3 = net.client(C2PSK, auto=True, client_id="C1")
    net.up(evil3, EVIL)
    evil4 = net.client(C2PSK, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.9/24"))
    net.up(evil4, EVIL)
    assert net.server.by_endpoint == {}
    assert net.server.drops["register-refused"] == 4


def test_live_address_is_not_taken_by_another_key():
    net = Net(encrypt=True, config_text=DB)
    c2 = net.client(C2PSK, auto=True, client_id="C2")
    net.up(c2, A2)
    evil = net.client(GLOBAL, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.3/24"))
    net.up(evil, EVIL)
    assert net.server.by_ip[ipaddress.IPv4Address("10.0.0.3").packed].endpoint == A2


def test_reload_revokes_a_removed_passphrase_at_once():
    net = Net(encrypt=True, config_text=DB)
    c1 = net.client(GLOBAL, auto=True, client_id="C1")
    c2 = net.client(C2PSK, auto=True, client_id="C2")
    net.up(c1, A1)
    net.up(c2, A2)
    net.down({A1: c1, A2: c2})
    net.server.reload(parse_config(DB.replace("psk=per-client-secret-c2", ""), "t"),
                      codec.derive_key(GLOBAL))
    assert A2 not in net.server.by_endpoint and A1 in net.server.by_endpoint
    c2.tun_packet(ip_packet("10.0.0.3", "10.0.0.2"), net.now)
    c2._register(net.now)
    net.up(c2, A2)
    assert net.server.outbox == []
    assert A2 not in net.server.by_endpoint


def test_reconnect_from_new_port_keeps_the_address_and_the_server_counter():
    net, c1, c2 = manual_pair(GLOBAL)
    for _ in range(3):
        c2.tun_packet(ip_packet("10.0.0.3", "10.0.0.2"), net.now)
    net.up(c2, A2)
    net.down({A1: c1, A2: c2})
    seq_before = net.server.by_endpoint[A1].tx_seq
    # 20 s later c1 reconnects from a new port.
    net.now += 21
    c1.on_timer(net.now)
    assert any(isinstance(e, Reconnect) for e in c1.events)
    new_a1 = (A1[0], 50000)
    c1.connected(net.now)
    net.up(c1, new_a1)
    assert A1 not in net.server.by_endpoint
    assert net.server.by_endpoint[new_a1].tx_seq == seq_before
    c2.tun_packet(ip_packet("10.0.0.3", "10.0.0.2"), net.now)
    net.up(c2, A2)
    assert [a for _, a in net.server.outbox] == [new_a1]


def test_client_accepts_a_restarted_server():
    """Flaw 5: the C client's window was never reset."""
    net, c1, c2 = manual_pair(GLOBAL)
    for _ in range(100):
        c2.tun_packet(ip_packet("10.0.0.3", "10.0.0.2"), net.now)
    net.up(c2, A2)
    net.down({A1: c1, A2: c2})
    assert len(c1.to_tun) == 100
    c1.to_tun.clear()
    # New server process: new prefixes, counters from 0.
    net.server = LegacyServer(encrypt=True, global_key=codec.derive_key(GLOBAL),
                              rng=lambda n: b"\xee" * n)
    c1._register(net.now)
    c2._register(net.now)
    net.up(c1, A1)
    net.up(c2, A2)
    pkt = ip_packet("10.0.0.3", "10.0.0.2")
    c2.tun_packet(pkt, net.now)
    net.up(c2, A2)
    net.down({A1: c1, A2: c2})
    assert c1.to_tun == [pkt]


def test_idle_client_expires():
    net = Net(encrypt=False)
    c1 = net.client(None, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"))
    net.up(c1, A1)
    net.server.on_timer(net.now + IDLE_TIMEOUT - 1)
    assert A1 in net.server.by_endpoint
    net.server.on_timer(net.now + IDLE_TIMEOUT + 10)
    assert net.server.by_endpoint == {} and net.server.by_ip == {}


def test_old_bare_register_form_is_accepted():
    net = Net(encrypt=False)
    net.receive(b"CX2P REGISTER 10.0.0.7\n", A1, net.now)
    assert net.server.by_endpoint[A1].ip_text == "10.0.0.7"


@pytest.mark.parametrize("junk", [b"", b"\x45", b"CX2P", b"CX2P \xff\xfe", b"CX2P CONFIG X=1\n",
                                  b"CX2P REGISTER MODE=AUTO CLIENT_ID=nobody\n",
                                  b"CX2P REGISTER MODE=MANUAL LOCAL_IP=0.0.0.0\n",
                                  b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.300\n",
                                  b"\x60" + bytes(47)])
def test_plain_server_survives_junk(junk):
    net = Net(encrypt=False, config_text=DB)
    net.receive(junk, EVIL, net.now)
    assert net.server.by_endpoint == {} and net.server.outbox == []


def test_auto_client_retries_register_until_config_then_every_30s():
    net = Net(encrypt=False, config_text=DB)
    c1 = net.client(None, auto=True, client_id="C1")
    c1.to_net.clear()
    t0 = net.now
    assert c1.next_deadline() == t0 + 5
    c1.on_timer(t0 + 5)
    assert len(c1.to_net) == 1
    net.now = t0 + 5
    net.up(c1, A1)
    net.down({A1: c1})
    assert c1.config is not None
    assert c1.next_deadline() == t0 + 5 + 20  # silence check before the 30 s REGISTER


def test_server_tun_gets_packets_for_no_client_and_answers_reach_clients():
    net = Net(encrypt=True)
    net.server.local_delivery = True
    c1 = net.client(GLOBAL, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"))
    net.up(c1, A1)
    ping = ip_packet("10.0.0.2", "10.0.0.1")
    c1.tun_packet(ping, net.now)
    net.up(c1, A1)
    assert net.server.to_tun == [ping] and net.server.outbox == []
    pong = ip_packet("10.0.0.1", "10.0.0.2")
    net.server.tun_packet(pong)
    net.down({A1: c1})
    assert c1.to_tun == [pong]
    net.server.tun_packet(ip_packet("10.0.0.1", "10.0.0.77"))
    assert net.server.outbox == [] and net.server.drops["no-route"] == 1


def test_client_registers_again_soon_when_its_traffic_gets_no_answer():
    """A restarted server forgot us: re-register in 5 s, not 30 s."""
    net = Net(encrypt=False)
    c1 = net.client(None, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"))
    c1.to_net.clear()
    t0 = net.now
    assert c1.next_deadline() == t0 + 20  # idle: only the silence check
    c1.tun_packet(ip_packet("10.0.0.2", "10.0.0.3"), t0 + 1)
    c1.to_net.clear()
    assert c1.next_deadline() == t0 + 5
    c1.on_timer(t0 + 5)
    assert c1.to_net == [codec.register_manual("10.0.0.2")]
    # Once the server answers, the normal 30 s period is back.
    c1.datagram_received(ip_packet("10.0.0.3", "10.0.0.2"), t0 + 6)
    assert c1.next_deadline() == t0 + 6 + 20


def test_plaintext_live_address_is_not_moved_by_another_host():
    net = Net(encrypt=False)
    c1 = net.client(None, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"))
    net.up(c1, A1)
    net.receive(codec.register_manual("10.0.0.2"), EVIL, net.now + 1)
    assert net.server.by_ip[ipaddress.IPv4Address("10.0.0.2").packed].endpoint == A1
    # The same host from a new port (a legacy reconnect) moves it at once.
    net.receive(codec.register_manual("10.0.0.2"), (A1[0], 1234), net.now + 2)
    assert net.server.by_ip[ipaddress.IPv4Address("10.0.0.2").packed].endpoint == (A1[0], 1234)


def test_throttle_lets_distinct_sources_through_within_a_global_budget():
    from camex.base.log import Throttle
    lines = []

    class Sink:
        def isEnabledFor(self, level):
            return True

        def log(self, level, msg, *args):
            lines.append(msg % args)

    now = [0.0]
    t = Throttle(Sink(), interval=10, clock=lambda: now[0], rate=2, burst=3)
    for host in ("a", "b", "c"):
        t.warning(("auth", host), "rejected from %s", host)
    assert lines == ["rejected from a", "rejected from b", "rejected from c"]
    for i in range(100):  # a flood from forged sources
        t.warning(("auth", f"x{i}"), "rejected from %s", f"x{i}")
    assert len(lines) == 3
    now[0] = 1.0  # the budget refills: two more lines a second
    t.warning(("auth", "d"), "rejected from %s", "d")
    t.warning(("auth", "a"), "rejected from %s", "a")  # still inside a's 10 s
    assert lines[3:] == ["rejected from d"]


def test_encrypted_client_roams_on_authenticated_fresh_data_only():
    """NAT rebinding: the client's next DATA comes from a new port."""
    net, c1, c2 = manual_pair(GLOBAL)
    moved = (A1[0], 40999)
    ping = ip_packet("10.0.0.2", "10.0.0.3")
    c1.tun_packet(ping, net.now)
    net.up(c1, moved)
    assert [a for _, a in net.server.outbox] == [A2]
    assert net.server.by_ip[ipaddress.IPv4Address("10.0.0.2").packed].endpoint == moved
    net.server.outbox.clear()
    c2.tun_packet(ip_packet("10.0.0.3", "10.0.0.2"), net.now)
    net.up(c2, A2)
    assert [a for _, a in net.server.outbox] == [moved]
    # A forged datagram with that prefix from elsewhere moves nothing.
    net.server.outbox.clear()
    forged = codec.seal(ChaCha20Poly1305(codec.derive_key(b"not-the-key")), codec.T_DATA,
                        c1.tx_prefix, c1.tx_seq + 5, ping)
    net.receive(forged, EVIL, net.now)
    assert net.server.by_ip[ipaddress.IPv4Address("10.0.0.2").packed].endpoint == moved
    assert net.server.outbox == []


def test_plaintext_registrations_stop_at_max_clients():
    """A plaintext REGISTER needs no key and may name any address: forged
    sources must not grow the client table without bound. Beyond
    --max-clients a new client is refused (counted, one throttled line);
    the registered ones keep working, one of them may move to a new port,
    and once an entry expires a new client gets in."""
    net = Net(encrypt=False)
    net.server.max_clients = 3
    for i in range(3):
        net.receive(f"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.{i + 2}\n"
                                     .encode(), ("10.250.0.2", 40000 + i), net.now)
    for i in range(50):   # a flood of forged registrations
        net.receive(f"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.9.{i}.1\n"
                                     .encode(), (f"192.0.2.{i}", 1000 + i), net.now)
    assert len(net.server.by_endpoint) == 3 and len(net.server.by_ip) == 3
    assert net.server.drops["server-full"] == 50
    # The registered clients still relay to each other.
    net.receive(ip_packet("10.0.0.2", "10.0.0.3"), ("10.250.0.2", 40000),
                                 net.now)
    assert [a for _, a in net.server.outbox] == [("10.250.0.2", 40001)]
    # A registered client that comes back from a new port replaces its entry.
    net.receive(b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.4\n",
                                 ("10.250.0.2", 50000), net.now)
    assert ("10.250.0.2", 50000) in net.server.by_endpoint
    assert len(net.server.by_endpoint) == 3
    # Two fall silent and expire; the third keeps talking; a new one fits.
    net.now += IDLE_TIMEOUT + 10
    net.receive(b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.4\n",
                                 ("10.250.0.2", 50000), net.now)
    net.server.on_timer(net.now)
    net.receive(b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.9\n", A2, net.now)
    assert A2 in net.server.by_endpoint and len(net.server.by_endpoint) == 2

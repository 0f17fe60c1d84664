"""One server, both protocols: v2 and legacy clients share one address
space on one port (camex.tunnel.server, camex.tunnel.client)."""

import ipaddress

from camex.legacy.client import LegacyClient
from camex.legacy import codec
from tests.support.mux_world import (
    PASS, C2PASS, A1, A2, A3, relays_both_ways, World, v2_client)


def test_v2_and_legacy_clients_relay_to_each_other():
    w = World()
    c1 = v2_client("C1", PASS)
    c2 = LegacyClient(auto=True, client_id="C2", key=codec.derive_key(C2PASS))
    w.add(A1, c1)
    w.add(A2, c2)
    assert c1.protocol == "v2"
    assert str(c1.config.address) == "10.0.0.2/24"
    assert str(c2.config.address) == "10.0.0.3/24"
    relays_both_ways(w, c1, c2)
    protos = {c["address"]: c["protocol"] for c in w.server.status_clients(w.now)}
    assert protos == {"10.0.0.2": "v2", "10.0.0.3": "legacy"}


def test_legacy_client_cannot_take_a_v2_clients_address():
    w = World()
    w.add(A1, v2_client("C1", PASS))
    thief = LegacyClient(auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"),
                         key=codec.derive_key(PASS))
    w.add(A3, thief)
    assert A3 not in w.server.legacy.by_endpoint
    assert w.server.legacy.drops["register-refused"] == 1


def test_v2_client_with_the_global_key_cannot_claim_c2s_address():
    w = World()
    thief = v2_client("", PASS, auto=False, local=ipaddress.IPv4Interface("10.0.0.3/24"))
    w.add(A3, thief)
    assert w.server.v2.server.peers == {}
    assert not thief.v2.established


def test_server_without_legacy_ignores_legacy_clients():
    w = World(legacy=False)
    c2 = LegacyClient(auto=True, client_id="C2", key=codec.derive_key(C2PASS))
    w.add(A2, c2)
    assert c2.config is None
    assert w.server.drops() == {"legacy-refused": 1}


def test_legacy_client_upgrades_to_v2_with_the_same_address():
    """A client that first registered over legacy and comes back over v2
    keeps its address: the legacy entry is dropped."""
    w = World()
    old = LegacyClient(auto=True, client_id="C1", key=codec.derive_key(PASS))
    w.add(A1, old)
    assert A1 in w.server.legacy.by_endpoint
    del w.clients[A1]
    new = v2_client("C1", PASS)
    w.add((A1[0], 5000), new)
    assert new.protocol == "v2"
    assert w.server.legacy.by_endpoint == {}
    assert [c["protocol"] for c in w.server.status_clients(w.now)] == ["v2"]


def test_max_clients_counts_both_protocols():
    """--max-clients bounds the clients of both protocols together: with
    one v2 client and one legacy client registered and a bound of 2, a
    third is refused whichever protocol it speaks, and says why."""
    w = World(max_clients=2)
    w.add(A1, v2_client("C1", PASS))
    w.add(A2, LegacyClient(auto=True, client_id="C2", key=codec.derive_key(C2PASS)))
    assert len(w.server.v2.server.peers) == 1 and len(w.server.legacy.by_endpoint) == 1
    legacy = LegacyClient(auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.7/24"),
                          key=codec.derive_key(PASS))
    w.add(A3, legacy)
    assert A3 not in w.server.legacy.by_endpoint
    assert w.server.legacy.drops["server-full"] == 1
    late = v2_client("", PASS, auto=False, local=ipaddress.IPv4Interface("10.0.0.8/24"))
    w.add(("10.250.3.2", 4004), late)
    assert len(w.server.v2.server.peers) == 1 and not late.v2.established
    assert w.server.v2.server.stats["refused"] >= 1

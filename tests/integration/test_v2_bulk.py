"""v2 BULK frames in the namespace lab (docs/PROTOCOL.md §4.7): a few MB of
TCP through a v2 tunnel, point to point (client <-> a server that owns a
TUN) and through the relay (client -> server -> client), arrive intact
(sha256), and `camex status --json` of the server (per client) and of the
clients shows that they travelled as BULK frames, in each direction that
carried them."""

import pytest

from lab.daemons import auto_config
from lab.faults import tcp_transfer
from lab.v2lab import GLOBAL, V2Camex

from camex.v2 import wire

pytestmark = pytest.mark.lab

SIZE = 8 << 20


@pytest.fixture
def cx(star):
    return V2Camex(star)


def start(cx, star):
    config = cx.write_config(auto_config({"C1": {"local_cidr": "10.0.0.2/24"},
                                          "C2": {"local_cidr": "10.0.0.3/24"}}))
    srv = cx.start_server(encrypt=True, psk=GLOBAL, config=config, extra=["--server-tun"])
    procs = [cx.start_client(ns, wait=False, auto=True, encrypt=True, psk=GLOBAL)
             for ns in (star.c1, star.c2)]
    for p in procs:
        cx.wait_client(p)
    return srv, procs


def tso_max(ns, address: str) -> int:
    """gso_max_size of the link in `ns` that holds `address` (its TUN)."""
    with ns.ipr() as ipr:
        (index,) = {a["index"] for a in ipr.get_addr(family=2) if
                    a.get_attr("IFA_ADDRESS") == address}
        return ipr.get_links(index)[0].get_attr("IFLA_GSO_MAX_SIZE")


def frames(cx) -> dict:
    """Per tunnel address: (BULK frames the server received from that
    client, BULK frames it sent to it), from the server's status."""
    return {a: (c["bulk_rx_frames"], c["bulk_tx_frames"], c["bulk"])
            for a, c in cx.clients().items()}


def test_bulk_carries_tcp_intact_point_to_point_and_through_the_relay(cx, star, measure):
    srv, (c1, c2) = start(cx, star)
    star.c1.wait_ping("10.0.0.1", timeout=10)
    star.c2.wait_ping("10.0.0.1", timeout=10)
    star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
    before = frames(cx)
    assert before["10.0.0.2"][2] and before["10.0.0.3"][2]   # both clients announced BULK
    # Every TUN's TSO size is capped: a super-packet's frame is one UDP send.
    cap = wire.bulk_tso_max(1472)
    assert (tso_max(star.c1, "10.0.0.2"), tso_max(star.c2, "10.0.0.3"),
            tso_max(star.server, "10.0.0.1")) == (cap, cap, cap)

    up = tcp_transfer(star.c1, star.server, "10.0.0.1", SIZE)        # client -> server TUN
    assert up["ok"] and up["bytes"] == SIZE, up
    after_up = frames(cx)
    assert after_up["10.0.0.2"][0] > before["10.0.0.2"][0]
    assert cx.status(star.c1)["bulk_tx_frames"] >= after_up["10.0.0.2"][0]

    down = tcp_transfer(star.server, star.c2, star.c2.tunnel_ip, SIZE, port=5302)  # server -> client
    assert down["ok"] and down["bytes"] == SIZE, down
    after_down = frames(cx)
    assert after_down["10.0.0.3"][1] > after_up["10.0.0.3"][1]
    assert cx.status(star.c2)["bulk_rx_frames"] == after_down["10.0.0.3"][1]

    relay = tcp_transfer(star.c1, star.c2, star.c2.tunnel_ip, SIZE, port=5303)  # C1 -> C2
    assert relay["ok"] and relay["bytes"] == SIZE, relay
    after = frames(cx)
    # The relay received frames from C1 and sent frames to C2.
    assert after["10.0.0.2"][0] > after_down["10.0.0.2"][0]
    assert after["10.0.0.3"][1] > after_down["10.0.0.3"][1]
    for p in (srv, c1, c2):
        assert "TUN TSO on" in p.output(), p.tail(20)
    assert cx.server_drops().get("v2-forged", 0) == 0
    measure(f"BULK: {SIZE >> 20} MiB C1->server {SIZE / up['seconds'] / 1e6 * 8:.0f} Mbit/s, "
            f"server->C2 {SIZE / down['seconds'] / 1e6 * 8:.0f} Mbit/s, "
            f"C1->C2 relay {SIZE / relay['seconds'] / 1e6 * 8:.0f} Mbit/s; frames {after}")

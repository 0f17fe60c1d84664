"""Options that only show their effect on a live network: --bind-ip and
--bind-dev on server and client, the auto-mode client ID taken from the MAC of the
default-route interface, and a client that keeps retrying while its server
is down or its name does not resolve."""

import time

import pytest

from lab.daemons import auto_config, vectors_config
from lab.netns import wait_until

pytestmark = pytest.mark.lab


def _registered(camex, star):
    return sorted(c["address"] for c in camex.status(star.server)["clients"])


@pytest.mark.parametrize("how", ["bind-ip", "bind-dev"])
def test_server_bound_to_one_side_serves_only_that_side(camex, star, how):
    extra = ["-b", "10.250.0.1"] if how == "bind-ip" else ["-d", "c1"]
    srv = camex.start_server(extra=extra)
    if how == "bind-ip":
        assert srv.find(r"listening on 10\.250\.0\.1:7000") is not None, srv.tail()
    camex.start_client(star.c1)
    c2 = camex.start_client(star.c2)
    srv.wait_for_line(r"client 10\.0\.0\.2 .*registered", timeout=10)
    # C2 reaches the server host on 10.250.1.1, where nothing listens for
    # it: the kernel answers port unreachable (counted as Udp.NoPorts).
    before = star.server.snmp()["Udp.NoPorts"]
    star.c2.ping("10.0.0.2", count=3, interval=0.1, wait=0.5)
    assert star.server.snmp()["Udp.NoPorts"] > before
    assert _registered(camex, star) == ["10.0.0.2"]
    assert c2.running()


def test_auto_client_without_name_uses_mac_of_default_route_interface(camex, star):
    mac = star.c1.mac("eth0").replace(":", "").upper()
    star.c1.add_route("default", gateway="10.250.0.1")
    config = camex.write_config(auto_config({mac: {"local_cidr": "10.0.0.2/24"},
                                             "C2": {"local_cidr": "10.0.0.3/24"}}))
    camex.start_server(config=config)
    argv = camex.client_argv(star.c1, auto=True)
    i = argv.index("-n")
    del argv[i:i + 2]  # no --name
    c1 = star.c1.spawn(argv, name="camex-client")
    camex.wait_client(c1)
    assert mac in c1.output()
    camex.start_client(star.c2, auto=True)
    star.c1.wait_ping("10.0.0.3", timeout=10)
    ids = {c["client_id"].upper() for c in camex.status(star.server)["clients"]}
    assert ids == {mac, "C2"}


def test_auto_client_waits_for_a_server_that_starts_later(camex, star, measure):
    config = camex.write_config(vectors_config(c2_psk=None))
    c1 = camex.start_client(star.c1, wait=False, auto=True)
    c2 = camex.start_client(star.c2, wait=False, auto=True)
    # Both clients are running and asking; their REGISTERs hit a closed port.
    mark = star.server.snmp()["Udp.NoPorts"]
    wait_until(lambda: star.server.snmp()["Udp.NoPorts"] >= mark + 2, 15, "REGISTERs to hit the closed port")
    assert c1.running() and c2.running() and c1.find("tunnel up") is None

    srv = camex.start_server(config=config)
    t0 = time.monotonic()
    camex.wait_client(c1, timeout=30)
    camex.wait_client(c2, timeout=30)
    measure(f"auto clients up {time.monotonic() - t0:.1f} s after the server started")
    star.c1.wait_ping("10.0.0.3", timeout=10)
    assert srv.count("registered") == 2


def test_client_keeps_retrying_while_server_name_does_not_resolve(camex, star):
    argv = camex.client_argv(star.c1)
    argv[argv.index("-s") + 1] = "camex-lab-server.invalid"
    c1 = star.c1.spawn(argv, name="camex-client")
    c1.wait_for_line(r"cannot reach server camex-lab-server\.invalid:7000.*retrying", timeout=15)
    # Still alive and not logging per attempt.
    mark = c1.mark()
    star.c1.ping("10.0.0.3", count=3, interval=0.1, wait=0.3)
    assert c1.running()
    assert c1.count(r"cannot reach server") <= 2
    assert len(c1.output()) - mark < 2000


def test_client_bind_ip_and_bind_dev(camex, star):
    """-b on a client picks the source address of its socket (here a second
    address of C1's link, which the kernel would not choose by itself); -d
    binds it to the link."""
    star.c1.add_address("eth0", "10.250.0.3/24")
    camex.start_server()
    camex.start_client(star.c1, extra=["-b", "10.250.0.3", "-d", "eth0"])
    camex.start_client(star.c2, extra=["-d", "eth0"])
    star.c1.wait_ping("10.0.0.3", timeout=10)
    port = camex.status(star.c1)["local_port"]
    endpoints = {c["address"]: c["endpoint"] for c in camex.status(star.server)["clients"]}
    assert endpoints["10.0.0.2"] == f"10.250.0.3:{port}"
    assert endpoints["10.0.0.3"].startswith("10.250.1.2:")


def test_max_clients_refuses_a_client_beyond_and_keeps_the_others(camex3, star3):
    """--max-clients 2 on a plaintext server: C1 and C2 register and talk;
    C3 keeps asking and is refused with a warning (not once per REGISTER)
    and a drop count, and C1 <-> C2 traffic goes on meanwhile."""
    srv = camex3.start_server(extra=["--max-clients", "2"])
    camex3.start_client(star3.c1)
    camex3.start_client(star3.c2)
    c3 = camex3.start_client(star3.clients[2], wait=False)
    srv.wait_for_line(r"rejected datagram from 10\.250\.2\.2:\d+: server full: 2 clients "
                      r"registered \(--max-clients\)", timeout=10)
    assert star3.c1.ping("10.0.0.3", count=5, interval=0.1).received == 5
    st = camex3.status(star3.server)
    assert sorted(c["address"] for c in st["clients"]) == ["10.0.0.2", "10.0.0.3"]
    assert st["drops"].get("server-full", 0) >= 1
    assert c3.running() and srv.running()
    assert srv.count(r"server full") <= 2

"""A client with the global passphrase claims addresses that belong to the
server side (camex.base.addrpolicy): the gateway, the tunnel network's network
and broadcast addresses, an address inside a route the server pushes, an
address outside the tunnel network. Each claim is made over v2 (a real
handshake from a plain UDP socket, lab.attacks.v2_claim) and with a legacy
REGISTER (encrypted or plaintext, built with camex.legacy.codec), and each
is refused while the server keeps answering the other clients' pings to the
gateway. What a user sees: the v2 refusal and its reason, the server's
status (no entry for the address, refusals counted by reason), its log,
and pings to the gateway answered by the server, not by the attacker.

Lab: star3 - C1 (v2) and C2 (legacy) are honest auto clients, C3
(10.250.2.2) is the attacker.
"""

import re
import socket
import time

import pytest

from lab import attacks as A
from lab.cclient import CClient
from lab.daemons import auto_config
from lab.netns import wait_until
from lab.v2lab import GLOBAL, V2Camex

from camex.legacy import codec
from camex.v2 import wire
from camex.v2.events import Refused

pytestmark = pytest.mark.lab

ATTACKER = "10.250.2.2"
SERVER_FOR_C3 = "10.250.2.1"
GATEWAY = "10.0.0.1"
# (claimed address, reason counted by the server)
CLAIMS = [(GATEWAY, "server-address"), ("10.0.0.0", "tunnel-network"),
          ("10.0.0.255", "tunnel-network"), ("10.251.0.5", "server-route"),
          ("192.168.77.5", "outside-tunnel")]


@pytest.fixture
def cx(star3):
    return V2Camex(star3)


def _honest(cx, lab, encrypt):
    cx.start_client(lab.c1, auto=True, name="C1", encrypt=True, psk=GLOBAL,
                    extra=["--protocol", "v2"])
    legacy_secret = {"encrypt": True, "psk": GLOBAL} if encrypt else {}
    cx.start_client(lab.c2, auto=True, name="C2", extra=["--protocol", "legacy"],
                    **legacy_secret)
    lab.c1.wait_ping(GATEWAY, timeout=10)
    lab.c2.wait_ping(GATEWAY, timeout=10)
    lab.c1.wait_ping("10.0.0.3", timeout=10)


def _gateway_answers(lab):
    for ns in (lab.c1, lab.c2):
        res = ns.ping(GATEWAY, count=2, interval=0.1)
        assert res.received >= 2 and res.loss_pct == 0, \
            f"{ns.role}: the server stopped answering the gateway: {res.output}"


def _register(encrypt, sealer, claim) -> bytes:
    msg = codec.register_manual(claim)
    return sealer.seal(codec.T_REGISTER, msg) if encrypt else msg


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plaintext"])
def test_claims_of_server_addresses_are_refused(cx, star3, encrypt, measure):
    lab = star3
    conf = cx.write_config(auto_config({"C1": {"local_cidr": "10.0.0.2/24"},
                                        "C2": {"local_cidr": "10.0.0.3/24"}}))
    # -k without -e: v2 with the passphrase, legacy in plaintext.
    srv = cx.start_server(encrypt=encrypt, psk=GLOBAL, config=conf, extra=["--server-tun"])
    _honest(cx, lab, encrypt)
    attacker = A.ns_socket(lab.clients[2], bind=(ATTACKER, 0))
    attacker.setblocking(False)
    sealer = A.Sealer(GLOBAL.encode())
    want: dict = {}
    try:
        for claim, why in CLAIMS:
            # v2: the refusal comes back with its reason.
            got = A.v2_claim(lab.clients[2], (SERVER_FOR_C3, cx.port), GLOBAL.encode(),
                             f"{claim}/24")
            assert isinstance(got, Refused), f"v2 claim of {claim}: {got!r}"
            assert got.code == wire.ERR_ADDRESS and claim in got.message, got
            want[why] = want.get(why, 0) + 1
            # Legacy: no registration, the refusal counted.
            attacker.sendto(_register(encrypt, sealer, claim), (SERVER_FOR_C3, cx.port))
            want[why] += 1
            wait_until(lambda: cx.status(lab.server)["address_refusals"] == want, 5,
                       f"the server to count the refusal of {claim}")
            assert claim not in cx.clients(), claim
            _gateway_answers(lab)
            # Nothing of the honest clients' traffic reached the attacker.
            assert A.drain(attacker) == []
    finally:
        attacker.close()
    st = cx.status(lab.server)
    assert sorted(c["address"] for c in st["clients"]) == ["10.0.0.2", "10.0.0.3"]
    assert lab.c1.ping("10.0.0.3", count=2, interval=0.1).received >= 2
    # One throttled warning, with the attacker's endpoint and the address.
    srv.wait_for_line(rf"rejected datagram from {ATTACKER}:\d+: {GATEWAY} is an "
                      rf"address of the server", timeout=5)
    assert srv.count(rf"rejected datagram from {ATTACKER}") == 1
    text = lab.server.run([cx.binary, "status", "--control-socket",
                           cx.control_socket(lab.server)], check=True).stdout
    assert "address refusals: outside-tunnel 2, server-address 2, server-route 2, " \
           "tunnel-network 4" in text, text
    measure(f"{len(CLAIMS)} addresses claimed over v2 and legacy "
            f"({'encrypted' if encrypt else 'plaintext'}): {sum(want.values())} refused, "
            f"gateway answered throughout")


def test_network_behind_a_client_inside_a_pushed_route(cx, star3):
    """allowed_cidr= inside a pushed route: that client takes the network's
    traffic and may send from it; nobody else may claim an address there."""
    lab = star3
    conf = cx.write_config(auto_config({
        "C1": {"local_cidr": "10.0.0.2/24", "allowed_cidr": "10.251.0.0/25"},
        "C2": {"local_cidr": "10.0.0.3/24"}}))
    cx.start_server(encrypt=True, psk=GLOBAL, config=conf)
    for ns, name in ((lab.c1, "C1"), (lab.c2, "C2")):
        cx.start_client(ns, auto=True, name=name, encrypt=True, psk=GLOBAL,
                        extra=["--protocol", "v2"])
    lab.c1.add_address("lo", "10.251.0.7/32")     # a host behind C1
    # C2 got 10.251.0.0/24 pushed: its pings reach C1's network, and back.
    lab.c2.wait_ping("10.251.0.7", timeout=10)
    for claim in ("10.251.0.7", "10.251.0.9"):
        got = A.v2_claim(lab.clients[2], (SERVER_FOR_C3, cx.port), GLOBAL.encode(),
                         f"{claim}/24")
        assert isinstance(got, Refused) and got.code == wire.ERR_ADDRESS, got
        assert "10.251.0.0/24" in got.message, got
    attacker = A.ns_socket(lab.clients[2], bind=(ATTACKER, 0))
    try:
        attacker.sendto(A.Sealer(GLOBAL.encode()).seal(codec.T_REGISTER,
                                                       codec.register_manual("10.251.0.7")),
                        (SERVER_FOR_C3, cx.port))
    finally:
        attacker.close()
    wait_until(lambda: cx.status(lab.server)["address_refusals"] == {"server-route": 3}, 5,
               "the server to count the legacy refusal")
    assert sorted(cx.clients()) == ["10.0.0.2", "10.0.0.3"]
    assert lab.c2.ping("10.251.0.7", count=3, interval=0.1).received >= 3


def test_a_configuration_that_gives_a_client_a_server_address(cx, star3):
    """At start (here: the -l address of --server-tun) and at a reload (the
    gateway): an error naming the file and the line; a running server keeps
    its configuration and its clients."""
    lab = star3
    good = auto_config({"C1": {"local_cidr": "10.0.0.2/24"}})
    conf = cx.write_config(good)
    argv = cx.server_argv(encrypt=True, psk=GLOBAL, config=conf,
                          extra=["--server-tun", "-l", "10.0.0.2/24"])
    res = lab.server.run(argv, timeout=30)
    assert res.returncode == 1
    assert f"{conf}:8: [client C1] local_cidr=10.0.0.2/24: 10.0.0.2 is an address of " \
           f"the server" in res.stdout + res.stderr, res.stdout + res.stderr

    srv = cx.start_server(encrypt=True, psk=GLOBAL, config=conf, extra=["--server-tun"])
    cx.start_client(lab.c1, auto=True, name="C1", encrypt=True, psk=GLOBAL)
    lab.c1.wait_ping(GATEWAY, timeout=10)
    with open(conf, "w") as f:
        f.write(auto_config({"C1": {"local_cidr": "10.0.0.2/24"},
                             "C2": {"local_cidr": "10.0.0.1/24"}}))
    mark = srv.mark()
    lab.server.run([cx.binary, "reload", "--control-socket", cx.control_socket(lab.server)],
                   check=True)
    srv.wait_for_line(rf"reload failed, keeping the old configuration: {re.escape(conf)}:11: "
                      rf"\[client C2\] local_cidr=10.0.0.1/24: 10.0.0.1 is an address of "
                      rf"the server", start=mark, timeout=5)
    assert lab.c1.ping(GATEWAY, count=2, interval=0.1).received >= 2
    assert sorted(cx.clients()) == ["10.0.0.2"]


def _c_ping(client, dst, ident, timeout=10.0) -> bool:
    """Echo requests from a C-model camera until one is answered (each
    given 0.3 s), or False after `timeout`."""
    deadline, seq = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        seq += 1
        client.ping(dst, ident, seq)
        answer_by = time.monotonic() + 0.3
        while time.monotonic() < answer_by:
            if (ident, seq) in client.replies:
                return True
            time.sleep(0.01)
    return False


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plaintext"])
def test_deployed_c_clients_under_the_address_policy(cx, star3, encrypt):
    """The deployed C client (lab.cclient's model of it): a camera with an
    honest manual address and one in auto mode keep their tunnel; a camera
    whose operator gave it the gateway's address gets no registration -
    the server answers the gateway for the others and hands the claimer
    none of their traffic."""
    lab = star3
    conf = cx.write_config(auto_config({"C2": {"local_cidr": "10.0.0.3/24"}}))
    cx.start_server(encrypt=encrypt, psk=GLOBAL, config=conf, extra=["--server-tun"])
    psk = GLOBAL.encode() if encrypt else None

    def camera(i, **kw):
        ns = lab.clients[i]
        return CClient(lambda: ns.socket(socket.AF_INET, socket.SOCK_DGRAM),
                       (ns.server_ip, cx.port), psk, **kw).start()

    honest, auto, claimer = (camera(0, local_ip="10.0.0.2"), camera(1, client_id="C2"),
                             camera(2, local_ip=GATEWAY))
    try:
        wait_until(lambda: auto.address == "10.0.0.3", 10, "C2's CONFIG")
        wait_until(lambda: cx.status(lab.server)["address_refusals"].get("server-address"),
                   10, "the server to refuse the camera claiming the gateway")
        assert _c_ping(honest, GATEWAY, 1), "the manual camera lost the gateway"
        assert _c_ping(auto, GATEWAY, 2), "the auto camera lost the gateway"
        assert _c_ping(honest, "10.0.0.3", 3), "camera to camera through the server"
        assert not _c_ping(claimer, "10.0.0.2", 4, timeout=2), \
            "the camera claiming the gateway got a tunnel"
        assert claimer.rx == 0, "traffic reached the camera claiming the gateway"
        assert sorted(c["address"] for c in cx.status(lab.server)["clients"]) == \
            ["10.0.0.2", "10.0.0.3"]
    finally:
        for c in (honest, auto, claimer):
            c.stop()

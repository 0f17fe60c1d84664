"""Passphrases in the lab: a wrong one is rejected with a clear (throttled)
log line, a per-client passphrase works for its client only, and SIGHUP
revocation cuts a connected client off at once while the others keep
talking."""

import os
import re
import signal
import socket

import pytest

from lab.daemons import C2_PSK, GLOBAL_PSK, auto_config, vectors_config
from lab.netns import wait_until
from tests.support import spec_wire


pytestmark = pytest.mark.lab

WRONG_PSK = "not-the-passphrase"
C3_PSK = "per-client-secret-c3"
REJECTED_C1 = r"rejected datagram from 10\.250\.0\.2:\d+: no key opens it"


def registered(camex, star) -> dict:
    """Tunnel address -> client entry of the server's `camex status`."""
    return {c["address"]: c for c in camex.status(star.server)["clients"]}


@pytest.mark.parametrize("mode", ["manual", "auto"])
def test_wrong_passphrase_is_rejected_with_a_clear_log_line(camex, star, mode):
    auto = mode == "auto"
    # (The database gives 10.0.0.3 to C2 and its own key, so manual clients
    # run against a server with the global key only.)
    config = camex.write_config(vectors_config()) if auto else None
    srv = camex.start_server(encrypt=True, psk=GLOBAL_PSK, config=config)
    c2 = camex.start_client(star.c2, auto=auto, encrypt=True, psk=C2_PSK if auto else GLOBAL_PSK)
    c1 = camex.start_client(star.c1, wait=False, auto=auto, encrypt=True, psk=WRONG_PSK)

    srv.wait_for_line(REJECTED_C1, timeout=15)
    assert list(registered(camex, star)) == ["10.0.0.3"]
    if auto:
        # No CONFIG can reach a client the server cannot authenticate.
        assert c1.find("tunnel up") is None
        assert star.c1.link_of("10.0.0.2") is None
    else:
        # A manual client configures itself, but nothing crosses.
        camex.wait_client(c1)
        r = star.c1.ping("10.0.0.3", count=3, interval=0.1, wait=1)
        assert r.received == 0, r.output
    assert c1.running() and c2.running()


def test_rejections_are_throttled_not_logged_per_packet(camex, star):
    """300 REGISTERs under a wrong passphrase: every one is counted, a few
    lines are logged. A REGISTER built the same way (from the spec alone,
    spec_wire.py) with the right passphrase registers, so the rejections
    are about the key alone."""
    srv = camex.start_server(encrypt=True, psk=GLOBAL_PSK)
    text = b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.9\n"
    prefix = os.urandom(4)
    sock = star.c1.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect(("10.250.0.1", 7000))
        for seq in range(300):
            sock.send(spec_wire.seal(spec_wire.key(WRONG_PSK), spec_wire.REGISTER, prefix, seq, text))
        wait_until(lambda: camex.status(star.server)["drops"].get("auth", 0) >= 300, 15,
                   "300 rejections counted")
        sock.send(spec_wire.seal(spec_wire.key(GLOBAL_PSK), spec_wire.REGISTER, prefix, 300, text))
        srv.wait_for_line(r"client 10\.0\.0\.9 at 10\.250\.0\.2:\d+ registered \(manual, key global\)", timeout=10)
    finally:
        sock.close()
    assert 1 <= srv.count(r"rejected datagram from 10\.250\.0\.2:\d+: no key opens it") <= 3, srv.tail(20)
    assert len(srv.output().splitlines()) < 15, srv.tail(20)


def test_per_client_passphrase_opens_only_its_own_client(camex, star):
    """C2's own passphrase does not let C1 in (a key is bound to its client
    ID); with the right passphrases both come up and talk."""
    config = camex.write_config(vectors_config())
    srv = camex.start_server(encrypt=True, psk=GLOBAL_PSK, config=config)
    c1 = camex.start_client(star.c1, wait=False, auto=True, encrypt=True, psk=C2_PSK)
    srv.wait_for_line(r"rejected datagram from 10\.250\.0\.2:\d+: .*C1 must use its own passphrase", timeout=15)
    assert registered(camex, star) == {}
    assert c1.find("tunnel up") is None

    c1.stop()
    camex.start_client(star.c1, auto=True, encrypt=True, psk=GLOBAL_PSK)
    camex.start_client(star.c2, auto=True, encrypt=True, psk=C2_PSK)
    star.c1.wait_ping("10.0.0.3", timeout=15)
    keys = {addr: c["key"] for addr, c in registered(camex, star).items()}
    assert keys["10.0.0.2"] == "global" and keys["10.0.0.3"].upper() == "C2"


def test_client_with_its_own_passphrase_cannot_use_the_global_one(camex, star):
    config = camex.write_config(vectors_config())
    srv = camex.start_server(encrypt=True, psk=GLOBAL_PSK, config=config)
    c2 = camex.start_client(star.c2, wait=False, auto=True, encrypt=True, psk=GLOBAL_PSK)
    srv.wait_for_line(r"rejected datagram from 10\.250\.1\.2:\d+: .*C2 must use its own passphrase", timeout=15)
    assert registered(camex, star) == {}
    assert c2.find("tunnel up") is None and star.c2.link_of("10.0.0.3") is None


def _three_client_config(c3_psk):
    c3 = {"local_cidr": "10.0.0.4/24"}
    if c3_psk:
        c3["psk"] = c3_psk
    return auto_config({
        "C1": {"local_cidr": "10.0.0.2/24"},
        "C2": {"local_cidr": "10.0.0.3/24", "psk": C2_PSK},
        "C3": c3,
    })


def test_sighup_revocation_cuts_off_a_connected_client_at_once(camex3, star3):
    camex, star = camex3, star3
    config = camex.write_config(_three_client_config(C3_PSK))
    srv = camex.start_server(encrypt=True, psk=GLOBAL_PSK, config=config)
    c1, c2, c3 = star.clients
    psks = {c1: GLOBAL_PSK, c2: C2_PSK, c3: C3_PSK}
    procs = {ns: camex.start_client(ns, wait=False, auto=True, encrypt=True, psk=psk) for ns, psk in psks.items()}
    for p in procs.values():
        camex.wait_client(p)
    c1.wait_ping("10.0.0.4", timeout=15)
    c3.wait_ping("10.0.0.3", timeout=15)
    c1.wait_ping("10.0.0.3", timeout=15)

    # Remove C3's passphrase from the file and tell the server.
    camex.write_config(_three_client_config(None))
    mark = srv.mark()
    srv.signal(signal.SIGHUP)
    srv.wait_for_line(r"configuration reloaded", timeout=10, start=mark)
    assert re.search(r"dropping client .*10\.0\.0\.4.*passphrase was removed", srv.output()[mark:]), srv.tail()

    # At once: the first pings after the reload fail for C3, both ways ...
    r = c3.ping("10.0.0.2", count=3, interval=0.1, wait=1)
    assert r.received == 0, r.output
    r = c1.ping("10.0.0.4", count=3, interval=0.1, wait=1)
    assert r.received == 0, r.output
    # ... while C1 and C2 keep talking.
    r = c1.ping("10.0.0.3", count=10, interval=0.05)
    assert r.received == 10, r.output
    assert set(registered(camex, star)) == {"10.0.0.2", "10.0.0.3"}
    assert srv.running() and all(p.running() for p in procs.values())

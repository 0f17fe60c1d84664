"""Link set-up and scrypt run in short-lived helper processes (camex.base.child):
what an operator sees of that in `camex status`, with the tunnel working as
before, and a reload that derives a changed passphrase in a helper again.
A plaintext daemon does not load `cryptography` at all (memory);
`camex status --json` says so in `process.crypto_loaded`."""

import subprocess

import pytest

from lab.daemons import auto_config
from lab.netns import wait_until
from lab.traffic import iperf3
from lab.v2lab import GLOBAL, PER_CLIENT, V2Camex, pings

pytestmark = pytest.mark.lab


@pytest.fixture
def cx(star):
    return V2Camex(star)


def _config(c2_psk: str) -> str:
    return auto_config({"C1": {"local_cidr": "10.0.0.2/24", "psk": PER_CLIENT["C1"]},
                        "C2": {"local_cidr": "10.0.0.3/24", "psk": c2_psk}})


def test_status_shows_no_pyroute2_in_the_daemons_and_what_their_helpers_cost(cx, star):
    config = cx.write_config(_config(PER_CLIENT["C2"]))
    srv = cx.start_server(encrypt=True, psk=GLOBAL, config=config, extra=["--server-tun"])
    assert srv.wait_for_line(r"server TUN (\S+) address (\S+)", timeout=5).group(2) == "10.0.0.1/24"
    c1 = cx.start_client(star.c1, auto=True, encrypt=True, psk=PER_CLIENT["C1"])
    assert c1.running()
    pings(star.c1, "10.0.0.1")  # both links configured: server TUN and client TUN

    for ns in (star.server, star.c1):
        proc = cx.status(ns)["process"]
        assert proc["pyroute2_loaded"] is False, proc
        assert proc["crypto_loaded"] is True, proc  # encrypted: it needs it
        helpers = proc["helpers"]
        # Link set-up (server TUN / client TUN) and scrypt each ran in a
        # helper, whose peak is reported since it is gone.
        assert helpers["netlink"]["runs"] >= 1 and helpers["netlink"]["peak_rss_kib"] > 0, proc
        assert helpers["kdf"]["runs"] == 1 and helpers["kdf"]["peak_rss_kib"] > 0, proc
        assert 0 < proc["rss_kib"] <= proc["peak_rss_kib"]

    text = subprocess.run([cx.binary, "status", "--control-socket", cx.control_socket(star.c1)],
                          capture_output=True, text=True, timeout=10).stdout
    assert "process: pid" in text and "helpers: kdf 1 run(s), peak" in text, text

    # A reload with C2's passphrase changed derives the new key, in a helper.
    with open(config, "w") as f:
        f.write(_config("a-new-passphrase-for-c2"))
    srv.signal(1)
    srv.wait_for_line("configuration reloaded", timeout=10)
    wait_until(lambda: cx.status(star.server)["process"]["helpers"]["kdf"]["runs"] == 2, 10,
               "the reload's scrypt helper")
    c2 = cx.start_client(star.c2, auto=True, encrypt=True, psk="a-new-passphrase-for-c2")
    assert c2.running()
    pings(star.c2, "10.0.0.1")
    assert cx.status(star.server)["process"]["pyroute2_loaded"] is False


def test_plaintext_daemons_relay_and_serve_without_loading_cryptography(cx, star):
    """Legacy plaintext (no -e/-k, so no v2 either): a server with its own
    TUN relaying between two auto clients. Pings both ways through the relay
    and to the server, and TCP from the server's TUN (TSO reads cut into
    packets for a legacy client), and none of the three daemons has
    imported `cryptography`."""
    config = cx.write_config(auto_config({"C1": {"local_cidr": "10.0.0.2/24"},
                                          "C2": {"local_cidr": "10.0.0.3/24"}}))
    srv = cx.start_server(config=config, extra=["--server-tun"])
    srv.wait_for_line(r"server TUN (\S+) address (\S+)", timeout=5)
    c1 = cx.start_client(star.c1, auto=True)
    c2 = cx.start_client(star.c2, auto=True)
    assert c1.running() and c2.running()
    pings(star.c1, "10.0.0.3")   # client to client through the relay
    pings(star.c2, "10.0.0.1")   # client to the server's TUN
    res = iperf3(star.c1, star.server, "10.0.0.1", seconds=1.0, extra=("-R",))
    assert res.received_bytes > 0, res

    for ns in (star.server, star.c1, star.c2):
        st = cx.status(ns)
        assert st["encrypted"] is False, st
        assert st["process"]["crypto_loaded"] is False, st["process"]
        assert st["process"]["pyroute2_loaded"] is False, st["process"]


def test_a_client_that_fails_at_start_leaves_no_helper_behind(cx, star):
    """The helper is forked before the daemon opens its TUN: when that
    fails, the user still gets one error line and exit status 1, and the
    helper goes away with the daemon (no stray process in the namespace)."""
    from pyroute2 import netns

    argv = cx.client_argv(star.c1, encrypt=True, psk=GLOBAL, extra=["-T", "/nonexistent/tun"])
    proc = star.c1.spawn(argv, name="camex-client")
    assert proc.wait(15) == 1
    errors = [ln for ln in proc.output().splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and "/nonexistent/tun" in errors[0], proc.output()
    wait_until(lambda: not netns.ns_pids().get(star.c1.name), 3,
               "every process of the failed client to exit")

"""The client daemon with IPv6 inside the tunnel, over the in-memory fakes
of the TUN, netlink and the transport: a v2 client on a TUN that carries
IPv6 asks netlink for its IPv6 address and routes; on camex.ko's TUN
(IPv4 only) it says so in one line at start and installs none of them."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from camex.daemon.client import ClientDaemon, ClientIO, ipv6_not_carried
from camex.daemon.options import parse_args
from camex.testing.fakes import FakeLink, FakeTransport, FakeTun

DUAL = ["-M", "client", "-s", "server.example", "-p", "7000", "--protocol", "v2",
        "-k", "secret", "-l", "10.0.0.2/24", "-l", "fd00:c::2/64", "-g", "fd00:c::1",
        "-c", "10.251.0.0/24", "-c", "fd00:251::/48"]


def run_until_configured(argv, tun_path):
    tun, transport, links = FakeTun(), FakeTransport(), []
    tun.path = tun_path

    def link(name):
        links.append(FakeLink(name))
        return links[-1]

    io = ClientIO(open_tun=lambda path: tun, link=link, resolve=transport.resolve,
                  connect=transport.connect, prepare_interface=lambda name: None,
                  signals=False)
    opts = parse_args(argv, environ={})
    opts.control_socket = ""
    daemon = ClientDaemon(opts, io)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (links and links[0].applied) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert links and links[0].applied
        return links[0].applied[-1]
    finally:
        daemon.loop.stop()
        thread.join(5)


def test_a_dual_stack_client_installs_both_families(caplog):
    with caplog.at_level(logging.INFO, logger="camex"):
        cfg = run_until_configured(DUAL, "/dev/net/tun")
    assert str(cfg.address) == "10.0.0.2/24" and str(cfg.address6) == "fd00:c::2/64"
    assert str(cfg.gateway6) == "fd00:c::1"
    assert [str(r) for r in cfg.routes] == ["10.251.0.0/24", "fd00:251::/48"]
    assert "not carried" not in caplog.text
    assert "address 10.0.0.2/24 fd00:c::2/64" in caplog.text


@pytest.mark.parametrize("tun_dev", [["-T", "/dev/camex"], []])
def test_on_camex_ko_ipv6_is_said_once_and_not_installed(caplog, tun_dev):
    """With -T /dev/camex, or when camex.ko is the device that opened."""
    with caplog.at_level(logging.INFO, logger="camex"):
        cfg = run_until_configured(DUAL + tun_dev, "/dev/camex")
    lines = [r.getMessage() for r in caplog.records if "not carried" in r.getMessage()]
    assert lines == ["IPv6 inside the tunnel is not carried on /dev/camex (camex.ko carries "
                     "IPv4 only): fd00:c::2/64, fd00:c::1, fd00:251::/48 not installed"]
    assert str(cfg.address) == "10.0.0.2/24" and cfg.address6 is None and cfg.gateway6 is None
    assert [str(r) for r in cfg.routes] == ["10.251.0.0/24"]


def test_nothing_is_said_without_ipv6_or_off_camex_ko():
    v4 = parse_args(["-M", "client", "-s", "s", "-p", "1", "-l", "10.0.0.2/24", "-T",
                     "/dev/camex"], environ={})
    assert ipv6_not_carried(v4) is None
    assert ipv6_not_carried(parse_args(DUAL, environ={})) is None
    auto = parse_args(["-M", "client", "-s", "s", "-p", "1", "-a", "-n", "C", "-k", "x",
                       "-T", "/dev/camex"], environ={})
    assert "not asked for" in ipv6_not_carried(auto)

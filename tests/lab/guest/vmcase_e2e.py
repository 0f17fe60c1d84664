"""End to end INSIDE a VM: the camex daemon over camex.ko and over tun.ko.

The star lab of lab/netns.py (server namespace between client namespaces c1
and c2).  Client c1 runs on /dev/camex: the driver's `camex` interface is
created in the guest's initial namespace at load, so it is moved into c1
before the daemon starts (device nodes are not namespaced, interfaces are).
Client c2 runs on tun.ko (/dev/net/tun).  Ping and iperf3 go from c1 to c2
through the server.
"""

import subprocess

import pytest
from pyroute2 import IPRoute

from lab.daemons import Camex
from lab.netns import StarTopology
from lab.traffic import iperf3
from vmlib import IFNAME, loaded


@pytest.fixture
def star():
    subprocess.run(["modprobe", "tun"], check=True)
    with loaded(up=False):
        with StarTopology(clients=2) as lab:
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=IFNAME)[0]
                ipr.link("set", index=idx, net_ns_fd=lab.c1.name)
            cx = Camex(lab, log_level="info")
            cx.start_server(timeout=180)
            c1 = cx.start_client(lab.c1, timeout=180, extra=["--tun-dev", "/dev/camex"])
            c2 = cx.start_client(lab.c2, timeout=180, extra=["--tun-dev", "/dev/net/tun"])
            yield lab, cx, c1, c2


def _stats_in(ns) -> dict:
    with ns.ipr() as ipr:
        return dict(ipr.get_links(ifname=IFNAME)[0].get_attr("IFLA_STATS64"))


def test_daemon_over_camex_ko_and_tun_ko_ping_and_iperf3(star):
    lab, cx, c1, c2 = star
    assert Camex.tun_dev(c1) == "camex"
    assert Camex.tun_dev(c2).startswith("tun")
    assert lab.c1.link_of(lab.c1.tunnel_ip) == "camex"

    res = lab.c1.wait_ping(lab.c2.tunnel_ip, timeout=60)
    assert res.ok, res.output
    res = lab.c2.ping(lab.c1.tunnel_ip, count=3)
    assert res.received == 3, res.output

    before = _stats_in(lab.c1)
    perf = iperf3(lab.c1, lab.c2, lab.c2.tunnel_ip, seconds=3)
    assert perf.received_bytes > 100_000, perf.raw
    perf_back = iperf3(lab.c2, lab.c1, lab.c1.tunnel_ip, seconds=3)
    assert perf_back.received_bytes > 100_000, perf_back.raw
    after = _stats_in(lab.c1)
    # The bytes really went through camex.ko, both ways.
    assert after["tx_bytes"] - before["tx_bytes"] > perf.received_bytes
    assert after["rx_bytes"] - before["rx_bytes"] > perf_back.received_bytes

    for proc in (c1, c2):
        assert proc.returncode is None, f"{proc.name} died"

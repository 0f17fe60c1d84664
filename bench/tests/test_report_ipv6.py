"""The report's IPv6 section: each -ipv6 row over its IPv4 twin of the
same run, as a reader of results/latest.md sees it."""

from bench import report
from bench.tunnels import BY_NAME


def _run(name, tcp1, pps, rtt, cpu_gb, group="camex"):
    return {"name": name, "group": group, "status": "ok", "startup_s": 0.3,
            "ping": {"rtt_median_ms": rtt},
            "tcp1": {"gbps": tcp1, "cpu_s_per_gb": cpu_gb}, "tcp4": {"gbps": tcp1},
            "udp64": {"rx_pps": pps},
            "daemons": {"server": {"peak_rss_kib": 1024}}, "other_tenants_cores": 0.1}


def _doc(entries):
    return {"started": "2026-01-01T00:00:00Z", "minutes": 1.0, "command": "python -m bench.run",
            "settings": {"runs": 1, "tcp_seconds": 5, "udp_seconds": 4, "ping_count": 30,
                         "inner_mtu": 1420, "inner_mtu6": 1418, "udp_payload": 64},
            "machine": {"cores": 2, "cpu": "X", "mem_gib": 1, "kernel": "k", "os": "o",
                        "python": "3", "python_packages": {}, "debian_packages": {},
                        "camex_commit": "abc"},
            "entries": entries}


def test_ipv6_rows_are_divided_by_their_ipv4_twins():
    doc = _doc([
        _run("camex-v2-relay", 2.0, 40000, 0.200, 10.0),
        _run("camex-v2-relay-ipv6", 1.5, 30000, 0.250, 12.0),
        _run("wireguard-go", 1.0, 50000, 0.100, 20.0, group="peer"),
        _run("wireguard-go-ipv6", 0.9, 45000, 0.100, 22.0, group="peer"),
    ])
    text = report.ipv6_cost(doc)
    assert ("| camex-v2-relay-ipv6 / camex-v2-relay | 1.500 / 2.000 = 0.75 x | "
            "30.0 / 40.0 = 0.75 x | 0.250 / 0.200 = 1.25 x | 12.0 / 10.0 = 1.20 x |") in text
    assert ("| wireguard-go-ipv6 / wireguard-go | 0.900 / 1.000 = 0.90 x | "
            "45.0 / 50.0 = 0.90 x | 0.100 / 0.100 = 1.00 x | 22.0 / 20.0 = 1.10 x |") in text
    md = report.markdown(doc, "x.png")
    assert "## The cost of IPv6 (underlay and inside) against IPv4" in md
    assert "inner MTU 1418" in md


def test_no_ipv6_section_without_a_pair():
    # an IPv6 row whose twin did not run (or did not measure) gives no line
    doc = _doc([_run("camex-v2-relay-ipv6", 1.5, 30000, 0.25, 12.0),
                _run("wireguard-go", 1.0, 50000, 0.1, 20.0, group="peer")])
    assert report.ipv6_cost(doc) == ""
    assert "cost of IPv6" not in report.markdown(doc, "x.png")


def test_every_pair_names_bench_entries_and_the_ipv6_side_runs_over_ipv6():
    for six, four in report.IPV6_PAIRS:
        assert BY_NAME[six].family == "ipv6" and BY_NAME[four].family == "ipv4"

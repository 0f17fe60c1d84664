"""The bench's report: what a reader of results/latest.md sees."""

from bench import report
from bench.profile import summarise


def _run(name, tcp1, rss_kib, group="camex", rtt=0.5, pps=20000, startup=0.3):
    return {
        "name": name, "group": group, "status": "ok", "startup_s": startup,
        "ping": {"rtt_avg_ms": rtt},
        "tcp1": {"gbps": tcp1, "cpu_s_per_gb": 10.0},
        "tcp4": {"gbps": tcp1 * 1.5},
        "udp64": {"rx_pps": pps},
        "daemons": {"server": {"peak_rss_kib": rss_kib}, "client": {"peak_rss_kib": 1024}},
        "other_tenants_cores": 0.1,
    }


def _doc(entries):
    return {
        "started": "2026-01-01T00:00:00Z", "minutes": 1.0, "command": "python -m bench.run",
        "settings": {"runs": 1, "tcp_seconds": 5, "udp_seconds": 4, "ping_count": 30,
                     "inner_mtu": 1420, "udp_payload": 64},
        "machine": {"cores": 2, "cpu": "X", "mem_gib": 1, "kernel": "k", "os": "o",
                    "python": "3", "python_packages": {}, "debian_packages": {},
                    "camex_commit": "abc"},
        "entries": entries,
    }


def test_runs_combine_to_medians_and_largest_rss():
    rec = report.combine([_run("a", 0.1, 2048), _run("a", 0.3, 4096), _run("a", 0.2, 1024)])
    f = report.figures(rec)
    assert f["tcp1"] == 0.2
    assert f["rss"] == 4.0  # MiB: the largest peak of all runs


def test_unavailable_row_says_why():
    doc = _doc([{"name": "camex-v2-p2p", "group": "camex", "status": "not available",
                 "note": "the client reports protocol 'legacy'"}])
    table = report.table(doc)
    assert "| camex-v2-p2p | not available: the client reports protocol 'legacy' |" in table


def test_goals_compare_with_the_best_peer():
    doc = _doc([
        _run("camex-v2-p2p", 2.0, 30 * 1024, rtt=0.5, pps=30000, startup=0.2),
        _run("camex-v2-relay", 1.0, 10 * 1024, rtt=0.4),
        _run("naive-python-aead", 0.5, 22 * 1024, group="baseline", rtt=0.4),
        _run("wireguard-go", 0.3, 50 * 1024, group="peer", rtt=0.3, pps=25000),
        _run("fastd-null", 0.4, 4 * 1024, group="peer", rtt=0.25, pps=35000),
    ])
    goals = report.goals(doc)
    assert "| camex v2 TCP 1 stream >= 2 x best peer (fastd-null 0.400 Gbit/s) | " \
           "2.000 Gbit/s = 5.00 x | met |" in goals
    assert "| camex v2 relay >= 0.7 x camex v2 point to point (TCP 1) | 0.50 x | NOT met |" in goals
    assert "| camex-v2-p2p UDP 64 B pps >= best peer (fastd-null 35.0 kpps) | " \
           "30.0 kpps = 0.86 x | NOT met |" in goals
    # Idle RTT against the encrypted floor of the same run, not a peer.
    assert "| camex-v2-p2p idle RTT <= 1.25 x the encrypted floor (naive-python-aead 0.400 ms) " \
           "| 0.500 ms = 1.25 x | met |" in goals
    assert "| camex-v2-relay idle RTT <= 1.25 x the encrypted floor (naive-python-aead " \
           "0.400 ms) | 0.400 ms = 1.00 x | met |" in goals
    # Memory: the floor's peak + 1 MiB.
    assert "| camex-v2-p2p: each daemon <= naive-python-aead + 1 MiB resident (23.0 MiB) | " \
           "max 30.0 MiB | NOT met |" in goals
    assert "| camex-v2-relay: each daemon <= naive-python-aead + 1 MiB resident (23.0 MiB) | " \
           "max 10.0 MiB | met |" in goals


def test_the_best_peer_is_the_best_of_every_peer_per_figure():
    """Whatever the peer is called (a second wireguard-go included), the
    best of each figure wins and is named; a peer without a figure and a
    row that is not a peer never are."""
    doc = _doc([
        _run("camex-v2-p2p", 6.0, 20 * 1024, pps=80000),
        _run("raw", 19.0, 0, group="baseline", pps=300000),
        _run("fastd-null", 1.4, 4 * 1024, group="peer", rtt=0.2, pps=90000),
        _run("wireguard-go", 0.8, 60 * 1024, group="peer", pps=30000),
        _run("wireguard-go-new", 2.8, 240 * 1024, group="peer", pps=70000),
        {"name": "tinc", "group": "peer", "status": "not available", "note": "not installed"},
    ])
    assert report._best_peer(doc, "tcp1") == (2.8, "wireguard-go-new")
    assert report._best_peer(doc, "kpps") == (90.0, "fastd-null")
    goals = report.goals(doc)
    assert "| camex v2 TCP 1 stream >= 2 x best peer (wireguard-go-new 2.800 Gbit/s) | " \
           "6.000 Gbit/s = 2.14 x | met |" in goals
    assert "| camex-v2-p2p UDP 64 B pps >= best peer (fastd-null 90.0 kpps) | " \
           "80.0 kpps = 0.89 x | NOT met |" in goals
    # Without the floor in the run, its goals say so instead of passing.
    assert "max 20.0 MiB (no naive-python-aead in this run) | n/a |" in goals
    # The best peer of a multi-run row is its median, as in the table.
    doc["entries"][4] = report.combine([_run("wireguard-go-new", x, 1024, group="peer")
                                        for x in (3.0, 1.0, 1.2)])
    assert report._best_peer(doc, "tcp1") == (1.4, "fastd-null")


def test_goals_without_v2_are_not_available():
    doc = _doc([_run("wireguard-go", 0.3, 1024, group="peer")])
    goals = report.goals(doc)
    assert "| camex-v2-p2p not available | n/a |" in goals


def test_profile_summary_separates_waiting(tmp_path):
    raw = tmp_path / "p.raw"
    raw.write_text(
        "<module> (camex:1);run (/x/camex/loop.py:10);select (/usr/lib/python3.11/selectors.py:468) 0\n"
        "<module> (camex:1);run (/x/camex/loop.py:10);EpollSelector.select (/usr/lib/python3.11/selectors.py:468) 60\n"
        "<module> (camex:1);run (/x/camex/loop.py:10);seal (/x/camex/legacy/codec.py:104) 30\n"
        "<module> (camex:1);run (/x/camex/loop.py:12);write (/x/camex/io/tun.py:51) 10\n")
    s = summarise(str(raw))
    assert s["samples"] == 100
    assert abs(s["idle_share"] - 0.6) < 1e-9
    assert s["self"][0] == ("seal (camex/legacy/codec.py:104)", 0.75)
    assert ("run (camex/daemon/loop.py)", 1.0) not in s["inclusive"]  # on every busy stack: not shown


def test_readme_quotes_the_latest_run_and_replaces_the_old_quote(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# bench\n\n<!-- latest-summary -->\n\n## Next\n")
    doc = _doc([_run("wireguard-go", 0.3, 1024, group="peer")])
    report.update_readme(doc, str(readme))
    doc["entries"][0]["tcp1"]["gbps"] = 0.7
    report.update_readme(doc, str(readme))
    text = readme.read_text()
    assert text.count("| wireguard-go | 0.700 |") == 1 and "| wireguard-go | 0.300 |" not in text
    assert text.startswith("# bench\n") and text.endswith("## Next\n")


def test_goals_judge_the_median_run_not_the_first():
    rec = report.combine([_run("camex-p2p-enc", 0.2, 30 * 1024, startup=0.9),
                          _run("camex-p2p-enc", 0.2, 10 * 1024, startup=0.3),
                          _run("camex-p2p-enc", 0.2, 10 * 1024, startup=0.2)])
    goals = report.goals(_doc([rec]))
    assert "| camex-p2p-enc: start to usable tunnel < 0.5 s | 0.300 s | met |" in goals
    assert "| camex-p2p-enc: each daemon <= naive-python-aead + 1 MiB resident | max 30.0 MiB " \
           "(no naive-python-aead in this run) | n/a |" in goals


def test_floor_says_what_no_python_daemon_can_go_below():
    doc = _doc([
        _run("naive-python-threads", 0.8, 12 * 1024, group="baseline", rtt=0.28),
        _run("naive-python-aead", 0.5, 22 * 1024, group="baseline", rtt=0.38),
        _run("fastd-null", 0.7, 4 * 1024, group="peer", rtt=0.25),
    ])
    text = report.floor(doc)
    assert "| naive-python-aead: as threads, ChaCha20-Poly1305 per packet, X25519 key | " \
           "0.380 | 1.52 x | 22.0 |" in text
    assert "| naive-python-threads: a blocked reader per direction, plaintext | 0.280 | " \
           "1.12 x | 12.0 |" in text
    assert "set against naive-python-aead itself (RTT <= 1.25 x, resident memory <= + 1 MiB" \
        in text
    assert "Its idle RTT (0.380 ms) is above the best peer's (fastd-null 0.250 ms): in this " \
           "run that gap belongs to the interpreter" in text
    assert "## The floor" in report.markdown(doc, "x.png")


def test_floor_claims_nothing_the_run_does_not_show():
    doc = _doc([
        _run("naive-python-aead", 0.5, 19 * 1024, group="baseline", rtt=0.30),
        _run("fastd-null", 0.7, 4 * 1024, group="peer", rtt=0.25),
    ])
    text = report.floor(doc)
    assert "Its idle RTT (0.300 ms) is above" in text
    doc["entries"][0]["ping"]["rtt_avg_ms"] = 0.2
    assert "is above the best peer" not in report.floor(doc)
    assert report.floor(_doc([_run("fastd-null", 0.7, 4096, group="peer")])) == ""
    assert "## The floor" not in report.markdown(_doc([]), "x.png")


def test_default_command_line_is_set_against_protocol_v2_both_ways():
    doc = _doc([
        _run("camex-v2-p2p", 2.0, 1024, pps=30000),
        _run("camex-v2-p2p-rev", 4.0, 1024, pps=20000),
        _run("camex-default-p2p", 2.0, 1024, pps=30000),
        _run("camex-default-p2p-rev", 3.0, 1024, pps=20000),
        _run("camex-default-relay", 1.0, 1024),   # no v2 twin in this run: no line
    ])
    text = report.defaults(doc)
    assert "| camex-default-p2p / camex-v2-p2p | 2.000 / 2.000 = 1.00 x | " \
           "30.0 / 30.0 = 1.00 x | met |" in text
    assert "| camex-default-p2p-rev / camex-v2-p2p-rev | 3.000 / 4.000 = 0.75 x | " \
           "20.0 / 20.0 = 1.00 x | NOT met |" in text
    assert "camex-default-relay" not in text
    md = report.markdown(doc, "x.png")
    assert "## The default command line against --protocol v2" in md
    assert "| camex-default-p2p-rev | 3.000 |" in report.table(doc)
    # nothing to compare: no section
    assert report.defaults(_doc([_run("camex-v2-p2p", 2.0, 1024)])) == ""
    assert "## The default command line" not in report.markdown(_doc([]), "x.png")


def _tun(read_avg, write_avg=1400, tso=True, reverse=False):
    send = "server" if reverse else "client"
    return {"read_avg_bytes": read_avg, "write_avg_bytes": write_avg, "sender": send,
            "super_packets": read_avg > 1420, "sender_tso": tso, "mtu": 1420}


def test_super_packets_show_per_tunnel_with_the_version():
    new = _run("wireguard-go-new", 2.8, 240 * 1024, group="peer")
    new.update(version="wireguard-go v0.0.20250522", tun=_tun(61234.4, 30000))
    old = _run("wireguard-go", 0.8, 60 * 1024, group="peer")
    old.update(version="wireguard-go v0.0.20220316", tun=_tun(1398, tso=False))
    doc = _doc([_run("raw", 19.0, 0, group="baseline"), old, new])
    text = report.tun_reads(doc)
    assert "| wireguard-go | wireguard-go v0.0.20220316 | off | 1398 | 1400 | no |" in text
    assert "| wireguard-go-new | wireguard-go v0.0.20250522 | on | 61234 | 30000 | yes |" in text
    assert "| raw |" not in text   # no TUN, no version: no line
    table = report.table(doc)
    assert "| 61234 super | 0.10 |" in table and "| 1398 | 0.10 |" in table
    assert "| – | 0.10 |" in table.split("| raw |")[1].splitlines()[0]
    md = report.markdown(doc, "x.png")
    assert "## TUN reads: super-packets or one packet per read" in md
    assert report.tun_reads(_doc([_run("raw", 19.0, 0, group="baseline")])) == ""


def test_an_unavailable_peer_fills_its_row_and_says_why():
    doc = _doc([{"name": "wireguard-go-new", "group": "peer", "status": "not available",
                 "note": "could not fetch wireguard-go from Debian sid/trixie: no network"}])
    row = [l for l in report.table(doc).splitlines() if "wireguard-go-new" in l][0]
    assert row.count("|") == report.COLUMNS.count("|")
    assert "not available: could not fetch wireguard-go from Debian sid/trixie: no network" in row


def test_the_tcp_floor_stands_beside_the_tcp_goal():
    """The bulk floor's TCP against the best peer (met or not by the same
    2 x), and camex v2 against the floor, with both CPU costs."""
    floor = _run("naive-python-bulk", 5.0, 22 * 1024, group="baseline")
    floor["tcp1"]["cpu_s_per_gb"] = 1.8
    doc = _doc([
        _run("camex-v2-p2p", 4.0, 25 * 1024),
        floor,
        _run("wireguard-go-new", 2.8, 240 * 1024, group="peer"),
    ])
    assert "| (the TCP floor: naive-python-bulk against the best peer, and camex v2 against it) " \
           "| 5.000 Gbit/s = 1.79 x at 1.80 CPU s/GB; camex v2 0.80 x the floor at 10.00 CPU " \
           "s/GB | NOT met |" in report.goals(doc)
    doc["entries"][2]["tcp1"]["gbps"] = 2.0
    assert "= 2.50 x at 1.80 CPU s/GB" in report.goals(doc)
    # The framed floor has a line of its own beside it.
    framed = _run("naive-python-bulk-framed", 4.4, 22 * 1024, group="baseline")
    doc["entries"].append(framed)
    assert "| (the TCP floor: naive-python-bulk-framed against the best peer, and camex v2 " \
           "against it) | 4.400 Gbit/s = 2.20 x at 10.00 CPU s/GB; camex v2 0.91 x" \
        in report.goals(doc)
    del doc["entries"][3]
    # Without the floor in the run there is no such line.
    del doc["entries"][1]
    assert "the TCP floor" not in report.goals(doc)
    assert "naive-python-bulk: as threads, TUN offloads" in report.floor(_doc([floor]))


def test_the_relay_floor_stands_beside_the_relay_goal():
    """The relay floor against the framed point-to-point floor (met or not
    by the relay goal's 0.7), and camex v2's relay against the relay floor."""
    relay_floor = _run("naive-python-framed-relay", 3.0, 22 * 1024, group="baseline")
    relay_floor["tcp1"]["cpu_s_per_gb"] = 3.4
    doc = _doc([
        _run("camex-v2-p2p", 5.0, 25 * 1024),
        _run("camex-v2-relay", 2.4, 25 * 1024),
        _run("naive-python-bulk-framed", 5.0, 22 * 1024, group="baseline"),
        relay_floor,
    ])
    line = "| (the relay floor: naive-python-framed-relay against naive-python-bulk-framed, " \
           "and camex v2 relay against it) | 3.000 Gbit/s = 0.60 x at 3.40 CPU s/GB; camex v2 " \
           "relay 0.80 x the relay floor at 10.00 CPU s/GB | NOT met |"
    assert line in report.goals(doc)
    relay_floor["tcp1"]["gbps"] = 3.5
    floor_line = next(x for x in report.goals(doc).splitlines() if "the relay floor" in x)
    assert "= 0.70 x at 3.40 CPU s/GB" in floor_line and floor_line.endswith("| met |")
    # Either floor missing: no such line.
    del doc["entries"][2]
    assert "the relay floor" not in report.goals(doc)
    assert "naive-python-framed-relay: two framed tunnels through a relay" \
        in report.floor(_doc([relay_floor]))

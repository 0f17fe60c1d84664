"""The harness end to end on three cheap entries (root: network namespaces).

Asserts what `make bench` shows a user: a row with figures for the raw
path, for a camex relay and for camex as users start it (no --protocol)
measured the other way (iperf3 -R: the client receives), and the files it
promises. No figure is
compared with a threshold: performance is judged by reading the results,
not by tests.
"""

import json
import os

import pytest

from bench import run

pytestmark = pytest.mark.lab

ENTRIES = ("raw", "camex-relay-plain", "naive-python-aead", "naive-python-bulk",
           "naive-python-bulk-framed", "naive-python-framed-relay",
           "naive-python-framed-forward", "camex-default-relay-rev")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the bench harness test needs root (network namespaces)")
    base = str(tmp_path_factory.mktemp("bench") / "selftest")
    assert run.main(["--quick", "--only", ",".join(ENTRIES), "--out", base]) == 0
    with open(base + ".json") as f:
        return base, json.load(f)


def test_every_requested_entry_has_figures(results):
    _, doc = results
    by = {e["name"]: e for e in doc["entries"]}
    # naive-python-aead and naive-python-bulk are the floors the report sets
    # camex against: each must be a tunnel that carries traffic, both ways,
    # under its keys.
    assert set(by) == set(ENTRIES)
    for name in by:
        e = by[name]
        assert e["status"] == "ok", e.get("note")
        assert e["tcp1"]["gbps"] > 0 and e["tcp4"]["gbps"] > 0
        assert e["udp64"]["rx_pps"] > 0
        assert e["ping"]["received"] == e["ping"]["transmitted"]
    # The TUN's own counters: the raw path has none; the naive tunnel reads
    # one packet per read (never above the MTU), camex v2 reads
    # super-packets (TUN offloads) on its sending side, here c2's (-R).
    assert "tun" not in by["raw"]
    naive = by["naive-python-aead"]["tun"]
    assert 1000 < naive["read_avg_bytes"] <= 1420 and naive["super_packets"] is False
    assert naive["sender_tso"] is False
    # The bulk floors read super-packets and send each as one train; the
    # framed one's are capped as camex caps its own (64,467 bytes).
    for name in ("naive-python-bulk", "naive-python-bulk-framed"):
        bulk = by[name]["tun"]
        assert bulk["super_packets"] is True and bulk["sender_tso"] is True, (name, bulk)
        assert bulk["read_avg_bytes"] > 1420
    assert by["naive-python-bulk-framed"]["tun"]["read_avg_bytes"] <= 64467 + 10
    # The relay floor carries the same super-packets c1 -> srv -> c2, and
    # all three of its processes are charged.
    for name in ("naive-python-framed-relay", "naive-python-framed-forward"):
        relay = by[name]
        assert relay["tun"]["super_packets"] is True and relay["tun"]["read_avg_bytes"] > 1420
        assert set(relay["daemons"]) == {"server", "client c1", "client c2"}
        assert relay["tcp1"]["daemon_cpu_by_role"]["server"] > 0
    assert "--relay --forward" in by["naive-python-framed-forward"]["desc"]
    assert "--forward" not in by["naive-python-framed-relay"]["desc"]
    v2 = by["camex-default-relay-rev"]["tun"]
    assert v2["sender"] == "server" and v2["super_packets"] is True, v2
    assert v2["read_avg_bytes"] > 1420 and v2["sender_tso"] is True


def test_camex_daemons_are_charged(results):
    _, doc = results
    e = next(x for x in doc["entries"] if x["name"] == "camex-relay-plain")
    assert set(e["daemons"]) == {"server", "client c1", "client c2"}
    assert all(d["peak_rss_kib"] > 1024 for d in e["daemons"].values())
    assert e["tcp1"]["cpu_s_per_gb"] > 0
    assert 0 < e["startup_s"] < 20


def test_report_files_are_written(results):
    base, doc = results
    text = open(base + ".md").read()
    assert "| camex-relay-plain |" in text and "## Performance goals" in text
    assert doc["machine"]["kernel"] in text
    with open(base + ".png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_default_command_line_row_runs_the_other_way(results):
    base, doc = results
    e = next(x for x in doc["entries"] if x["name"] == "camex-default-relay-rev")
    # No --protocol: the client settled on v2 by itself.
    server, clients = e["desc"].split("; server ")[1].split(", clients ")
    assert "--protocol" not in server and "--protocol" not in clients
    assert e["protocol"] == "v2"
    # Every iperf3 run went c2 -> srv -> c1, as iperf3 itself reports.
    assert e["direction"] == "reverse"
    assert all(e[k]["reverse"] for k in ("tcp1", "tcp4", "udp64"))
    fwd = next(x for x in doc["entries"] if x["name"] == "camex-relay-plain")
    assert not any(fwd[k]["reverse"] for k in ("tcp1", "tcp4", "udp64"))
    assert "| camex-default-relay-rev |" in open(base + ".md").read()

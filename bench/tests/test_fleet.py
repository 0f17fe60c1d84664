"""The camera-fleet benchmark's logic that needs no namespace: the rate
search, exact loss counting, the inner packets' sequence tags, the naive
relay's wire format against camex's codec, and the report section a
reader of results/fleet.md (or of the bench report) sees."""

import os
import struct

import pytest

from bench import fleet_core as fc
from bench import report
from camex.legacy import codec


# ------------------------------------------------------------ the search


def _drive(search, capacity, *, achieved_share=1.0, noise=None):
    """Run a search against a server that relays everything up to
    ``capacity`` datagrams/s and loses 1 % above it."""
    seen = []
    while (rate := search.next_rate()) is not None:
        seen.append(rate)
        offered = int(rate * achieved_share)
        lost = 0 if rate <= capacity else offered // 100
        if noise:
            lost = noise(rate, lost, offered)
        search.record(rate, offered, offered - lost, 1.0)
    return seen


def test_the_search_doubles_then_bisects_to_within_its_precision():
    s = fc.RateSearch(start=1000, precision=0.05, max_steps=20)
    seen = _drive(s, capacity=11000)
    assert seen[:5] == [1000, 2000, 4000, 8000, 16000]       # doubling until a loss
    assert seen[5] == 12000                                    # then halfway
    res = s.result()
    assert 11000 / 1.05 <= res["max_rate"] <= 11000
    assert not res["generator_bound"]
    assert s.hi / s.lo <= 1.05
    best = res["steps"][res["best_step"]]
    assert best["passed"] and best["achieved"] == res["max_rate"]


def test_a_loss_of_exactly_the_threshold_fails_a_step_and_just_under_passes():
    s = fc.RateSearch(start=10000, max_steps=1)
    assert not s.record(10000, 10000, 9990, 1.0)["passed"]    # 0.1 %: not under 0.1 %
    s = fc.RateSearch(start=10000, max_steps=1)
    assert s.record(10000, 10000, 9991, 1.0)["passed"]


def test_a_first_step_that_loses_halves_down_and_stops_at_the_floor():
    s = fc.RateSearch(start=8000, floor=1000, max_steps=20)
    seen = _drive(s, capacity=100)
    assert seen == [8000, 4000, 2000, 1000]
    assert s.result()["max_rate"] is None


def test_the_search_stops_when_the_generator_cannot_offer_the_asked_rate():
    s = fc.RateSearch(start=1000, max_steps=20)
    # The generator offers 80 % of what is asked: the server is not the limit.
    _drive(s, capacity=1e9, achieved_share=0.8)
    res = s.result()
    assert res["generator_bound"] and len(res["steps"]) == 1
    assert res["max_rate"] == 800


def test_a_pass_above_a_fail_on_a_noisy_machine_keeps_the_pass():
    s = fc.RateSearch(start=1000, precision=0.1, max_steps=20)
    s.record(1000, 1000, 1000, 1.0)
    s.record(2000, 2000, 1000, 1.0)          # lost
    s.record(1500, 1500, 1500, 1.0)
    s.record(1750, 1750, 1000, 1.0)          # lost
    s.record(1000, 1000, 990, 1.0)           # a hiccup below an earlier pass
    assert s.lo == 1500 and s.hi > s.lo
    assert s.result()["max_rate"] == 1500


# ------------------------------------------------------------ counting


def test_loss_is_counted_exactly_by_sequence_numbers():
    c = fc.StepCounter()
    c.expect(3, 10)
    for k in (0, 1, 2, 2, 2, 9):              # duplicates count once
        c.mark(3, k)
    c.mark(3, 10)                              # beyond the step's total
    c.mark(4, 0)                               # a step nobody announced
    assert c.received(3) == 4
    assert c.stray == 2
    assert fc.loss(10, c.received(3)) == pytest.approx(0.6)
    assert c.silent(3, 5) == [3]               # k = 3 and 8 both missing: sender 3
    c.forget(3)
    assert c.received(3) == 0


def test_loss_never_goes_negative_and_an_empty_step_loses_nothing():
    assert fc.loss(0, 0) == 0.0
    assert fc.loss(10, 12) == 0.0


def test_an_inner_packet_is_1200_bytes_of_valid_ipv4_udp_with_its_tag():
    hdr = fc.inner_header("10.64.0.2", "10.64.3.235")
    pkt = fc.inner_packet(hdr, 7, 123456, fc.payload_tail())
    assert len(pkt) == fc.INNER_SIZE
    assert pkt[0] == 0x45 and pkt[9] == 17
    assert struct.unpack("!H", pkt[2:4])[0] == fc.INNER_SIZE
    assert fc._checksum(pkt[:20]) == 0                        # header checksum holds
    assert pkt[16:20] == bytes([10, 64, 3, 235])
    sport, dport, length, csum = struct.unpack("!HHHH", pkt[20:28])
    assert dport == fc.SINK_PORT and length == fc.INNER_SIZE - 20 and csum == 0
    assert fc.tag_of_inner(pkt) == (7, 123456)
    assert fc.tag_of_udp_payload(pkt[28:]) == (7, 123456)


# ------------------------------------------------------------ naive relay


def test_the_naive_relays_header_is_the_legacy_codecs():
    from bench import naive_relay

    aead = codec.new_aead(codec.derive_key(b"pass"))
    d = codec.seal(aead, codec.T_DATA, b"\1\2\3\4", 5, b"x" * 100)
    assert naive_relay.HEADER.unpack_from(d) == (b"CX2P", codec.T_DATA, b"\1\2\3\4", 5, 100, 5)
    assert naive_relay.HEADER.size == codec.HEADER_LEN


def test_the_naive_relay_refuses_a_bad_command_line(capsys):
    from bench import naive_relay

    assert naive_relay.main(["not-a-port", "pass"]) == 2
    assert "PORT PASSPHRASE" in capsys.readouterr().err


# ------------------------------------------------------------ the report


def _run(server, receiver, n, rate, cpu, gen=6.0, status="ok", bound=False):
    if status != "ok":
        return {"server": server, "receiver": receiver, "clients": n, "status": status,
                "note": "bench/cserver is not there yet"}
    step = {"asked": rate, "offered": int(rate * 3), "received": int(rate * 3),
            "seconds": 3.0, "achieved": rate, "achieved_ratio": 1.0, "loss": 0.0,
            "passed": True, "server_cpu_us": cpu, "gen_cpu_us": gen, "gen_seal_us": 4.0}
    return {"server": server, "receiver": receiver, "clients": n, "status": "ok",
            "steps": [dict(step, asked=rate * 2, achieved=rate * 2, loss=0.05, passed=False),
                      step],
            "best_step": 1, "generator_bound": bound, "rss_kib": 24 * 1024,
            "peak_rss_kib": 25 * 1024, "load_before": [1.5, 1.0, 1.0]}


def _doc(runs):
    return {"started": "2026-12-06T04:00:00Z", "minutes": 9.5,
            "command": "python -m bench.fleet --clients 10,1000",
            "machine": {"cores": 2, "cpu": "AMD EPYC", "kernel": "6.1", "python": "3.11.7",
                        "camex_commit": "abc1234"},
            "settings": {"inner_size": 1200, "step_seconds": 3.0, "max_loss": 0.001,
                         "keep_up": 0.95, "start_rate": 30000.0}, "runs": runs}


def test_the_fleet_table_shows_the_best_passing_step_of_each_row():
    doc = _doc([_run("camex", "client", 10, 60000, 12.0),
                _run("camex", "client", 1000, 50000, 13.0, bound=True),
                _run("c-server", "client", 10, 0, 0, status="not available")])
    lines = report.fleet_table(doc).splitlines()
    assert lines[0] == report.FLEET_COLUMNS
    assert lines[2] == ("| camex | client | 10 | 60.0 | 12.00 | – | 25.0 / 24.0 | 6.00; 4.00 | "
                        "1.000 | 1.50 | 2 |")
    # The row whose first step ran at the start rate (30 k/s) and passed shows it there.
    at_start = dict(_run("camex", "client", 10, 30000, 12.0), steps=[
        dict(_run("camex", "client", 10, 30000, 15.0)["steps"][1]),
        _run("camex", "client", 10, 60000, 12.0)["steps"][1]])
    row = report.fleet_table(_doc([at_start])).splitlines()[2]
    assert row.startswith("| camex | client | 10 | 60.0 | 12.00 | 15.00 |")
    assert "| 1,000 | 50.0 (generator-bound) |" in lines[3]
    assert lines[4].startswith("| c-server | client | 10 | not available: bench/cserver")
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_the_fleet_goals_are_ratios_of_one_run():
    doc = _doc([_run("camex", "client", 10, 60000, 6.0),
                _run("camex", "client", 1000, 50000, 9.0),
                _run("c-server", "client", 10, 90000, 9.0),
                _run("naive-relay", "client", 10, 40000, 5.0)])
    goals = report.fleet_goals(doc)
    assert "| camex legacy CPU / dgram <= c-server's / 1.5 | client | 10 | 6.00 / 9.00 = 0.67 x " \
           "| met |" in goals
    assert "| camex legacy CPU / dgram <= 1.25 x naive-relay's | client | 10 | 6.00 / 5.00 = " \
           "1.20 x | met |" in goals
    assert "| camex: max rate at 1,000 clients >= 0.9 x at 10 | client | 1,000 | 50.00 / " \
           "60.00 = 0.83 x | NOT met |" in goals
    # No c-server row at 1,000: no ratio is made up for it.
    assert "c-server's / 1.5 | client | 1,000" not in goals


def test_the_bench_report_carries_the_fleet_section_when_the_run_has_one():
    section = report.fleet_section(_doc([_run("camex", "tun", 100, 30000, 14.0)]))
    assert section.startswith("## Camera fleet")
    assert "| camex | tun | 100 | 30.0 | 14.00 |" in section
    doc = _doc([_run("camex", "tun", 100, 30000, 14.0)])
    assert report.fleet_markdown(doc).startswith("# camex bench: a server under a camera fleet")


def test_report_main_re_renders_a_fleet_json(tmp_path):
    import json

    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(_doc([_run("naive-relay", "client", 10, 40000, 5.0)])))
    assert report.main([str(path)]) == 0
    text = (tmp_path / "fleet.md").read_text()
    assert "| naive-relay | client | 10 | 40.0 | 5.00 |" in text


def test_make_bench_fleet_and_its_help_exist():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "mk", "bench.mk")) as f:
        mk = f.read()
    assert "\nbench-fleet:" in mk and "-m bench.fleet" in mk


def test_a_full_fleet_run_is_quoted_between_the_readme_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- fleet-summary -->\nold\n<!-- fleet-summary -->\nrest\n")
    report.update_readme_fleet(_doc([_run("camex", "client", 10, 60000, 12.0)]), str(readme))
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "`python -m bench.fleet --clients 10,1000`" in text
    assert "| camex | client | 10 | 60.0 | 12.00 |" in text

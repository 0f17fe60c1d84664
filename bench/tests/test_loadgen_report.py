"""bench/load.py's results: what a reader of results/loadgen.md sees.

The measurement needs namespaces and minutes (`make bench-load`); its
report is checked here from the last real run's JSON, so that a change to
the generator keeps the results format the README quotes.
"""

import json
import os

from bench import load as loadgen

RESULTS = os.path.join(os.path.dirname(loadgen.__file__), "results")


def _doc():
    with open(os.path.join(RESULTS, "loadgen.json")) as f:
        return json.load(f)


def test_the_committed_report_is_what_the_committed_json_renders():
    with open(os.path.join(RESULTS, "loadgen.md")) as f:
        assert loadgen.markdown(_doc()) == f.read()


def test_a_run_row_gives_memory_per_client_and_relay_ratio():
    doc = _doc()
    run = dict(doc["runs"][0], mode="plaintext", clients=100, registered=99,
               registered_after=98, rss_kib_2_after_iperf=2048, rss_kib_n_after_iperf=2148,
               kib_per_client=1.0, relay_2={"gbps": 0.5}, relay_n={"gbps": 0.25},
               relay_ratio=0.5, register_s=0.3)
    rows = [line for line in loadgen.markdown(dict(doc, runs=[run])).splitlines()
            if line.startswith("| plaintext")]
    assert rows == ["| plaintext | 100 | 99 (98) | 2.0 | 2.1 | 1.00 | 0.500 | 0.250 | 0.5 | 0.3 |"]


def test_a_failed_mode_says_why_in_a_full_width_row():
    doc = dict(_doc(), runs=[{"mode": "encrypted", "clients": 10000, "error": "no server"}])
    lines = loadgen.markdown(doc).splitlines()
    header = next(line for line in lines if line.startswith("| mode"))
    row = next(line for line in lines if line.startswith("| encrypted"))
    assert "failed: no server" in row
    assert row.count("|") == header.count("|")

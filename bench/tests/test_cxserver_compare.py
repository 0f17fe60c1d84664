"""The side-by-side run of cxserver and camex's server (bench.cserver.compare),
short and slow enough for any machine: every server kind gets a row with
the datagrams it relayed, its CPU per datagram and the machine's load, and
the files it promises. No figure is compared with a threshold."""

import json
import os

import pytest

from bench.cserver import compare

pytestmark = pytest.mark.lab


def test_every_server_relays_and_gets_a_figure(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the comparison needs root (network namespaces)")
    out = str(tmp_path / "cmp")
    assert compare.main(["--clients", "3", "--rate", "2000", "--seconds", "1", "--rounds", "1",
                         "--out", out]) == 0
    with open(out + ".json") as f:
        doc = json.load(f)
    assert [r["server"] for r in doc["runs"]] == list(compare.KINDS)
    for r in doc["runs"]:
        # A slow, loss-free rate: nearly everything arrives, and intact.
        assert r["relayed"] >= 0.95 * r["sent"] > 0 and r["bad"] == 0, r
        assert r["us_per_datagram"] > 0 and r["other_cores"] >= 0
    assert set(doc["median_us_per_datagram"]) == set(compare.KINDS)
    with open(out + ".md") as f:
        assert "camex / cxserver:" in f.read()

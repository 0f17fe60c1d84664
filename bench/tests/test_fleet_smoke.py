"""One quick run of the camera-fleet bench in a real lab (root: network
namespaces): 10 C-client models through the camex server and the naive
relay to a receiving C-client model, 10 v2 clients through camex to a v2
client, and C-client models through the naive relay to its own TUN;
1-s steps, two of them (every generator and receiver kind runs once). What `make bench-fleet` reports must come out of it: a
loss-free rate, the server's CPU per datagram and memory, the generator's
cost and that it kept up."""

import os

import pytest

from bench import fleet


@pytest.fixture(scope="module")
def runs():
    assert os.geteuid() == 0, "the fleet smoke run needs root (network namespaces)"
    lines = []
    out = fleet.run([10], ["camex", "camex-v2", "naive-relay"], ["client"], 1.0, lines.append,
                    max_steps=2, start_rate=2000.0)
    out += fleet.run([10], ["naive-relay"], ["tun"], 1.0, lines.append, max_steps=2,
                     start_rate=2000.0)
    return out


def test_every_row_finds_a_loss_free_rate_with_its_costs(runs):
    assert [(r["server"], r["receiver"]) for r in runs] == [
        ("camex", "client"), ("camex-v2", "client"), ("naive-relay", "client"),
        ("naive-relay", "tun")]
    for r in runs:
        assert r["status"] == "ok", r.get("note")
        assert r["registered"] == 10
        # The probe: every client's datagrams reached the receiver.
        assert r["probe"]["received"] == r["probe"]["offered"] > 0
        assert r["probe"]["silent_clients"] == []
        assert r["max_rate"] is not None and r["max_rate"] >= 1900
        best = r["steps"][r["best_step"]]
        assert best["loss"] < 0.001 and best["received"] <= best["offered"]
        assert best["server_cpu_us"] > 0 and best["gen_cpu_us"] > 0
        assert r["peak_rss_kib"] >= r["rss_kib"] > 5 * 1024
        assert r["server_alive"]


def test_the_generator_keeps_up_with_what_it_is_asked(runs):
    for r in runs:
        for st in r["steps"]:
            assert st["achieved_ratio"] > 0.9, (r["server"], st)
            assert st["refused"] == 0

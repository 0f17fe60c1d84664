"""bench.echo_micro prints, for camex's v2 cores and for the floor, one
echo's cold and warm CPU; the camex echo really crosses both cores (a
request delivered to the server's TUN queue, a reply to the client's)."""

import re
import subprocess
import sys

from bench import echo_micro


def test_the_camex_echo_moves_a_request_and_a_reply():
    echoes, now = echo_micro.memory_echoes()
    camex = echoes["camex v2 cores"]
    # Each step pops what the one before produced: an empty queue (a
    # packet dropped on the way) raises IndexError.
    for i in range(5):
        camex(now + i)


def test_it_reports_both_rows_with_figures():
    out = subprocess.run([sys.executable, "-m", "bench.echo_micro", "--rounds", "3",
                          "--gap", "0.001"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    rows = {m.group(1).strip(): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^  (.+?) cold +([\d.]+) us +warm +([\d.]+) us", out, re.M)}
    assert set(rows) == {"camex v2 cores", "floor (4 AEAD calls)"}, out
    assert all(c > 0 and w > 0 for c, w in rows.values())

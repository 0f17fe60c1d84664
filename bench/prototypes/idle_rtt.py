"""Idle-tunnel round trips of bench entries, many pings, interleaved rounds.

The bench's 30 pings give a median that one busy minute of another tenant
moves by 0.5 ms; this takes N pings per entry (20 ms apart, as the bench),
repeats the entries in rounds and prints the median of the round medians,
with the daemons' CPU per ping (utime+stime, 10 ms ticks: coarse).

    python bench/prototypes/idle_rtt.py camex-p2p-plain,naive-python -n 200 --rounds 3
    CAMEX=/path/to/old-tree-wrapper python bench/prototypes/idle_rtt.py ...   # before/after

`--hook CMD` runs CMD (with {pids} of the daemons) during the pings, e.g.
`perf stat -p {pids}` or `py-spy record -p {pid0}`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bench import procstat  # noqa: E402
from bench.tunnels import BY_NAME  # noqa: E402
from lab.netns import StarTopology  # noqa: E402

RTT = re.compile(r"time=([\d.]+) ms")


def one(name: str, count: int, interval: str, hook: str) -> tuple:
    with StarTopology(clients=2) as lab:
        up = BY_NAME[name].up(lab)
        time.sleep(0.3)
        pids = [p.pid for _, p in up.daemons]
        proc = None
        if hook:
            proc = subprocess.Popen(hook.format(pids=",".join(map(str, pids)), pid0=pids[0],
                                                pid1=pids[-1]), shell=True)
            time.sleep(1.0)
        cpu0 = sum(procstat.cpu_seconds(p) or 0 for p in pids)
        res = up.client.run(["ping", "-n", "-c", count, "-i", interval, "-W", "1", up.target],
                            timeout=count * float(interval) + 30)
        cpu1 = sum(procstat.cpu_seconds(p) or 0 for p in pids)
        if proc is not None:
            proc.wait()
    times = sorted(float(x) for x in RTT.findall(res.stdout))
    return times, (cpu1 - cpu0) / max(len(times), 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("entries", help="comma-separated bench entries (bench.run --list)")
    ap.add_argument("-n", type=int, default=200, help="pings per entry and round")
    ap.add_argument("-i", default="0.02", help="seconds between pings (the bench: 0.02)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--hook", default="")
    a = ap.parse_args(argv)
    medians: dict = {}
    for _ in range(a.rounds):
        for name in a.entries.split(","):
            t, cpu = one(name, a.n, a.i, a.hook)
            if not t:
                print(f"{name}: no replies", flush=True)
                continue
            med = statistics.median(t)
            medians.setdefault(name, []).append(med)
            print(f"{name}: n={len(t)} min={t[0]:.3f} p25={t[len(t) // 4]:.3f} med={med:.3f} "
                  f"p75={t[3 * len(t) // 4]:.3f} ms, daemons' CPU {cpu * 1e6:.0f} us per ping",
                  flush=True)
    for name, m in medians.items():
        print(f"{name}: median of {len(m)} round medians {statistics.median(m):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

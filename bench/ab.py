"""Two camex trees side by side: the same tunnel, rounds in turn.

    python -m bench.ab OLD_TREE NEW_TREE [--entry camex-v2-p2p] [--rounds 6] [--seconds 5]

Each tree is a checkout with its own venv (`make venv` in it: its
`.venv/bin/camex` runs); `--entry` is one camex entry of bench/tunnels.py
(`python -m bench.run --list`). Every round brings the tunnel up once per
tree, in turn, and runs iperf3 TCP one stream through it; a change's
effect is then the difference of medians taken in the same minutes, not
of two runs an hour apart on a shared machine. Per tree: the medians of
Gbit/s and of each daemon's CPU seconds per GB, user (Python, the AEAD,
libc) and system (the kernel's sends, reads and writes) apart, from
/proc. Run it at nice -10 (`nice -n -10 python -m bench.ab ...`) as
bench.run --nice does: the daemons inherit it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from lab.netns import StarTopology
from lab.traffic import iperf3

from . import procstat
from .tunnels import BY_NAME


def one_round(tree: str, entry, seconds: float) -> dict:
    """The tunnel of `entry` up with `tree`'s camex, one iperf3 TCP run:
    {"gbps": x, "<role> user": s/GB, "<role> sys": s/GB, ...}."""
    os.environ["CAMEX"] = os.path.join(tree, ".venv", "bin", "camex")
    with StarTopology(clients=2) as lab:
        up = entry.up(lab)
        before = {role: procstat.cpu_times(p.pid) for role, p in up.daemons}
        res = iperf3(up.client, up.server, up.target, seconds=seconds)
        gb = res.gbps * res.seconds / 8
        row = {"gbps": res.gbps}
        for role, p in up.daemons:
            after = procstat.cpu_times(p.pid)
            if after is None or before[role] is None or not gb:
                continue
            row[f"{role} user"] = (after[0] - before[role][0]) / gb
            row[f"{role} sys"] = (after[1] - before[role][1]) / gb
        return row


def medians(rows: list) -> dict:
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def table(trees: list, result: dict) -> str:
    keys = list(next(iter(result.values())))
    head = ["tree"] + [("Gbit/s" if k == "gbps" else f"{k} s/GB") for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trees:
        lines.append("| " + " | ".join([t] + [f"{result[t].get(k, float('nan')):.3f}"
                                             for k in keys]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    ap.add_argument("trees", nargs="+", help="checkouts, each with .venv/bin/camex")
    ap.add_argument("--entry", default="camex-v2-p2p")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    entry = BY_NAME.get(args.entry)
    if entry is None or entry.group != "camex":
        ap.error(f"--entry: {args.entry!r} is not a camex entry of bench/tunnels.py")
    trees = [os.path.abspath(t) for t in args.trees]
    for t in trees:
        if not os.access(os.path.join(t, ".venv", "bin", "camex"), os.X_OK):
            ap.error(f"{t}: no .venv/bin/camex (run `make venv` there)")
    rows: dict = {t: [] for t in trees}
    for r in range(args.rounds):
        for t in trees:
            row = one_round(t, entry, args.seconds)
            rows[t].append(row)
            print(f"round {r + 1} {t}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()),
                  file=sys.stderr, flush=True)
    result = {t: medians(rows[t]) for t in trees}
    print(f"{args.entry}, TCP 1 stream, medians of {args.rounds} rounds in turn:\n")
    print(table(trees, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

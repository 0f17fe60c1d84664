"""`make bench-vm`: iperf3 through camex.ko vs through tun.ko, same VM.

One boot of one kernel (default 6.12) runs lab/vm/bench_guest.py; this side
prints the medians and the ratio and keeps the JSON under
lab/vm/cache/bench-<release>.json.  Under TCG the absolute numbers are low
(emulated CPU); the ratio is the figure of interest (target: >= 0.9).
"""

from __future__ import annotations

import json
import shutil
import sys

from . import run
from .kernels import CACHE


def main(kernel: str = "6.12", seconds: int = 10, rounds: int = 5,
         queue_len: int | None = None) -> int:
    extra = [str(seconds), str(rounds)] + ([str(queue_len)] if queue_len else [])
    lab = run.run(kernel, "bench", extra=extra, timeout=1200)
    data_path = lab.outdir / "bench.json" if lab.outdir else None
    if lab.error or not data_path or not data_path.exists():
        print(f"bench-vm: {kernel}: no result ({lab.error or 'see bench.log'})")
        print(lab.file("bench.log")[-3000:])
        return 1
    data = json.loads(data_path.read_text())
    keep = CACHE / f"bench-{lab.release}.json"
    shutil.copy2(data_path, keep)
    med = data["median_bps"]
    print(f"bench-vm on {data['kernel']} (TCG, {data['rounds']} rounds x "
          f"{data['seconds']:.0f} s, TCP iperf3 through a userspace relay):")
    for kind in ("camex", "tun"):
        runs = ", ".join(f"{b / 1e6:.0f}" for b in data["runs_bps"][kind])
        runs += "; retransmits " + ", ".join(str(r) for r in data.get("retransmits", {}).get(kind, []))
        print(f"  {kind + '.ko':9} median {med[kind] / 1e6:7.1f} Mbit/s  (runs: {runs})")
    print(f"  ratio camex/tun = {data['ratio']:.2f}  (target >= 0.90)   [{keep}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))

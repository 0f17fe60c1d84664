"""CPU and wall time of one state-file save with N legacy clients.

    python -m bench.statefile_micro [--clients 100,1000] [--rounds 12]

ServerState.save (camex.daemon.server_state_io) over a stand-in legacy
server of N registered encrypted clients, each with its own key (a client
section each, the costlier case: one derived MAC key per entry), written
to a temporary directory: alternately after traffic (every window and
idle time moved) and after a second in which nothing changed. Median of
the best 9 of --rounds saves each, in milliseconds. `--tree DIR` imports
camex from another checkout (git archive COMMIT camex | tar -x -C DIR),
for a before/after in one run. docs/FASTPATH.md, section 7, quotes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


class _Key:
    def __init__(self, cid: str):
        self.client_id, self.key = cid, os.urandom(32)


class _Peer:
    pass


class _Floor:
    def high_water(self, live=()) -> int:
        return max([0, *live])


class _Legacy:
    """The parts of a LegacyServer the snapshot reads."""

    def __init__(self, n: int):
        from camex.base.replay import ReplayWindow
        self.by_endpoint, self._replay, self._key_by_id = {}, {}, {}
        self.seq_floor = _Floor()
        for i in range(n):
            k = _Key(f"cam{i}")
            self._key_by_id[k.client_id] = k
            p = _Peer()
            p.endpoint = (f"10.1.{i // 250}.{i % 250 + 1}", 40000 + i)
            p.ip_text = f"172.16.{i // 250}.{i % 250 + 1}"
            p.client_id, p.mode, p.key = k.client_id, "auto", k
            p.tx_prefix, p.rx_prefix = os.urandom(4), os.urandom(4)
            w = ReplayWindow(64)
            w.top, w.bitmap = 123456789 + i, 0xfff
            p.rx_window, p.since, p.last_rx, p.tx_seq = w, 0.0, 5.0, 1000 + i
            self.by_endpoint[p.endpoint] = p
            self._replay[(k.client_id, p.rx_prefix)] = w


def measure(n: int, rounds: int) -> dict:
    from types import SimpleNamespace

    from camex.daemon.server_state_io import ServerState

    core = SimpleNamespace(legacy=_Legacy(n), v2=None, outbox=[])
    opts = SimpleNamespace(state_dir=tempfile.mkdtemp(prefix="statefile-micro-"), port=9999,
                           encrypt=True)
    st = ServerState(core, opts)
    st.file.prepare()
    res: dict = {"after traffic": [], "nothing changed": []}
    now = 10.0
    for _ in range(rounds):
        for mode in res:
            if mode == "after traffic":
                for p in core.legacy.by_endpoint.values():
                    p.rx_window.top += 3
                    p.last_rx = now
            now += 1.0
            c0, w0 = time.process_time(), time.perf_counter()
            st.save(now)
            res[mode].append(((time.process_time() - c0) * 1e3,
                              (time.perf_counter() - w0) * 1e3))
    out = {}
    for mode, v in res.items():
        cpu = sorted(x[0] for x in v)[:9]
        wall = sorted(x[1] for x in v)[:9]
        out[mode] = (cpu[len(cpu) // 2], wall[len(wall) // 2])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.statefile_micro",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="100,1000")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--tree", help="import camex from this directory instead")
    args = ap.parse_args(argv)
    if args.tree:
        sys.path.insert(0, args.tree)
    for n in (int(x) for x in args.clients.split(",")):
        for mode, (cpu, wall) in measure(n, max(9, args.rounds)).items():
            print(f"N={n:5d} {mode:16s} CPU {cpu:7.2f} ms  wall {wall:7.2f} ms")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a camex daemon's time goes under load: py-spy on a loaded tunnel.

Brings up a camex tunnel exactly as `make bench` does (tunnels.py), runs
iperf3 through it and meanwhile samples every camex daemon with py-spy
(--idle, so that time waiting in the selector shows as well; --nonblocking,
so that sampling does not stop the process it measures). The collapsed
stacks are summarised per daemon: share of samples per leaf line
(self time) and per function anywhere on the stack (inclusive time).

    python -m bench.profile [--only camex-relay-enc,...] [--seconds 8] [--load tcp,udp] [--native]

Writes bench/results/profile.md (and the raw stacks as profile-*.raw,
which git ignores).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time

from lab.netns import StarTopology
from lab.traffic import iperf3

from . import procstat, report
from .tunnels import BY_NAME

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEFAULT = ("camex-relay-enc", "camex-relay-plain", "camex-p2p-enc", "camex-v2-p2p", "camex-v2-relay")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.path.exists(beside) else (shutil.which("py-spy") or "py-spy")


def _short(frame: str) -> str:
    """'func (/long/path/camex/io/tun.py:42)' -> 'func (camex/io/tun.py:42)'."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("/camex/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path[path.index(marker) + 1:]
            break
    line = f":{m.group('line')}" if m.group("line") else ""
    return f"{m.group('func')} ({path}{line})"


def _is_idle(frames: list) -> bool:
    """Waiting for work: in the event loop's selector (with --native the
    leaf is epoll_wait under it)."""
    return any(f.startswith(("EpollSelector.select (", "EpollSelector.poll (", "epoll_wait ("))
               for f in frames[-6:])


def summarise(raw_path: str, top: int = 14) -> dict:
    """Shares of the *busy* samples (those not waiting in the selector):
    per leaf line (self time) and per function anywhere on the stack
    (inclusive time); and the share of samples spent waiting."""
    leaf = collections.Counter()
    incl = collections.Counter()
    total = busy = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [_short(x) for x in stack.split(";")]
            if _is_idle(frames):
                continue
            busy += n
            leaf[frames[-1]] += n
            seen = set()
            for fr in frames:
                # Inclusive per function (not per line), counted once per stack.
                key = re.sub(r":\d+\)$", ")", fr)
                if key not in seen:
                    seen.add(key)
                    incl[key] += n
    return {"samples": total, "idle_share": (total - busy) / total if total else 0,
            "self": [(fr, n / busy) for fr, n in leaf.most_common(top)] if busy else [],
            "inclusive": [(fr, n / busy) for fr, n in incl.most_common(top + 10)
                          if n < busy] if busy else []}


def profile_entry(name: str, seconds: float, udp: bool, rate: int, native: bool, log) -> dict:
    entry = BY_NAME[name]
    with StarTopology(clients=2) as lab:
        up = entry.up(lab)
        procs = []
        for role, p in up.daemons:
            raw = os.path.join(RESULTS_DIR, f"profile-{name}-{'udp' if udp else 'tcp'}-"
                               f"{role.replace(' ', '-')}.raw")
            argv = [py_spy(), "record", "--pid", str(p.pid), "--duration", str(int(seconds)),
                    "--rate", str(rate), "--idle", "--format", "raw",
                    # --native needs to stop the process for each sample.
                    *(["--native"] if native else ["--nonblocking"]),
                    "--output", raw]
            procs.append((role, p, raw, subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                          stderr=subprocess.PIPE, text=True)))
        cpu0 = {role: procstat.cpu_seconds(p.pid) for role, p in up.daemons}
        time.sleep(0.5)  # py-spy attaches
        extra = ("-u", "-b", "0", "-l", "64") if udp else ()
        res = iperf3(up.client, up.server, up.target, seconds=seconds - 1, extra=extra)
        out = {"name": name, "desc": up.desc, "load": "UDP 64 B -b 0" if udp else "TCP 1 stream",
               "gbps": round(res.gbps, 4), "daemons": {},
               "rate": (f"{res.received_bytes / 64 / res.seconds / 1e3:.1f} kpps received" if udp
                        else f"{res.gbps:.3f} Gbit/s")}
        for role, p, raw, sp in procs:
            _, err = sp.communicate(timeout=seconds + 30)
            cpu = procstat.cpu_seconds(p.pid) - cpu0[role]
            d = {"cpu_s": round(cpu, 2), "raw": os.path.basename(raw)}
            if sp.returncode != 0 or not os.path.exists(raw):
                d["error"] = err.strip().splitlines()[-1] if err.strip() else f"rc {sp.returncode}"
            else:
                d.update(summarise(raw))
            out["daemons"][role] = d
        log(f"{name}: {out['rate']} under py-spy; "
            + ", ".join(f"{r}: {d['cpu_s']} CPU s, waiting {d.get('idle_share', 0):.0%}"
                        for r, d in out["daemons"].items()))
        return out


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = ["# py-spy profiles of camex under iperf3 load (bench/profile.py)", "",
             f"Run {doc['started']}: `{doc['command']}`; {m['cores']} cores ({m['cpu']}), "
             f"kernel {m['kernel']}, Python {m['python']}, camex at {m['camex_commit']}. "
             f"py-spy --idle {'--native' if doc.get('native') else '--nonblocking'}, "
             f"{doc['rate']} Hz. 'waiting' = share of samples in the selector; the lists "
             "give shares of the remaining (busy) samples.", ""]
    for e in doc["entries"]:
        lines += [f"## {e['name']}, {e['load']}: {e['rate']} while sampled", "",
                  e["desc"], ""]
        for role, d in e["daemons"].items():
            if "error" in d:
                lines += [f"### {role}: py-spy failed: {d['error']}", ""]
                continue
            lines += [f"### {role}: {d['cpu_s']} CPU s, {d['samples']} samples, "
                      f"waiting {d['idle_share']:.0%}", "", "Self (leaf line), share of busy samples:", "", "```"]
            lines += [f"{share:6.1%}  {fr}" for fr, share in d["self"]]
            lines += ["```", "", "Inclusive (function anywhere on the stack):", "", "```"]
            lines += [f"{share:6.1%}  {fr}" for fr, share in d["inclusive"]]
            lines += ["```", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(DEFAULT))
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=int, default=250)
    ap.add_argument("--load", default="tcp,udp",
                    help="tcp (iperf3 one stream) and/or udp (64-byte flood), comma-separated")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument("--out", default="profile")
    args = ap.parse_args(argv)

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    os.makedirs(RESULTS_DIR, exist_ok=True)
    doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": "python -m bench.profile " + " ".join(argv if argv is not None else sys.argv[1:]),
           "rate": args.rate, "native": args.native, "machine": report.machine_info(), "entries": []}
    for load in [x.strip() for x in args.load.split(",") if x.strip()]:
        for name in [n.strip() for n in args.only.split(",") if n.strip()]:
            doc["entries"].append(profile_entry(name, args.seconds, load == "udp", args.rate,
                                                args.native, log))
    path = os.path.join(RESULTS_DIR, args.out + ".md")
    with open(path, "w") as f:
        f.write(markdown(doc))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: every tunnel of bench/tunnels.py measured the same way.

For each entry, in a fresh three-namespace lab (see tunnels.py):
  1. bring the tunnel up; start-up = daemons launched -> first echo reply;
  2. ping RTT on the idle tunnel (PING_COUNT pings, 20 ms apart);
  3. iperf3 TCP, one stream, then four streams (-P 4);
  4. iperf3 UDP with 64-byte payloads at full speed (-b 0): packets per
     second that reached the receiver;
  (an entry whose name ends in "-rev" runs every iperf3 with -R: the
  server side sends, the client side receives);
  5. the daemons' peak resident memory (VmHWM) and their CPU seconds
     (utime+stime) during each iperf3 run, per GB that crossed.
Also recorded: how many cores other tenants of the machine kept busy
meanwhile (the machine may be shared; figures under load are noisy).

    python -m bench.run [--quick] [--only a,b] [--skip a,b] [--list] [--out NAME]

Writes bench/results/NAME.{json,md,png} (NAME: latest for a full run, quick
for --quick or --only, unless --out says otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback

from lab.daemons import camex_binary
from lab.netns import LabError, StarTopology
from lab.traffic import iperf3
from bench.tunnels import INNER_MTU6  # the IPv6 entries' inner MTU

from . import procstat, report, tunstat
from .tunnels import BY_NAME, ENTRIES, INNER_MTU, NotAvailable

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
# The RTT goal is a ratio of medians: with 30 pings a row's median rested on
# a handful of echoes (one run put the v2 relay a fifth below point to
# point, which crosses one more daemon); 200 take 4 s a row.
PING_COUNT = 200
# --fleet: the servers and search of the fleet rows inside `make bench`
# (`make bench-fleet` measures more: v2 clients, the server's TUN, 3-s steps).
FLEET_SERVERS = ("camex", "naive-relay", "c-server", "c-server-4m")
FLEET_STEP_S = 2.0
FLEET_MAX_STEPS = 7


class Durations:
    def __init__(self, quick: bool):
        # Seconds per iperf3 run. The full run keeps the whole bench (22
        # entries, about 25 s each) under ten minutes.
        self.tcp = 2.0 if quick else 5.0
        self.udp = 2.0 if quick else 4.0
        self.ping = 10 if quick else PING_COUNT


def _cpu(daemons) -> dict:
    """role -> (utime + stime, stime) in seconds, (None, None) if gone."""
    out = {}
    for role, p in daemons:
        t = procstat.cpu_times(p.pid)
        out[role] = (None, None) if t is None else (t[0] + t[1], t[1])
    return out


_RTT = re.compile(r"time=([\d.]+) ms")


def _ping(up, count: int) -> dict:
    """Echo round trips on the idle tunnel, each reply's time kept: the
    median resists the scheduling stalls of a shared machine, the average
    (what ping prints) does not."""
    res = up.client.run(["ping", "-n", "-c", count, "-i", "0.02", "-W", "1", up.target],
                        timeout=count * 0.02 + 10)
    times = sorted(float(x) for x in _RTT.findall(res.stdout))
    out = {"transmitted": count, "received": len(times)}
    if times:
        out.update(rtt_min_ms=times[0], rtt_median_ms=statistics.median(times),
                   rtt_avg_ms=round(statistics.fmean(times), 3), rtt_max_ms=times[-1])
    return out


def _hwm(daemons) -> dict:
    return {role: procstat.peak_rss_kib(p.pid) for role, p in daemons}


def _helpers(daemons) -> dict:
    """The peaks of the short-lived helpers camex daemons fork for link
    set-up and scrypt (camex.base.child), from `camex status --json`: gone before
    VmHWM is read, they are reported next to their daemon, not hidden."""
    out = {}
    for role, p in daemons:
        argv = [str(a) for a in p.argv]
        if "--control-socket" not in argv:
            continue
        path = argv[argv.index("--control-socket") + 1]
        try:
            res = subprocess.run([camex_binary(), "status", "--json", "--control-socket", path],
                                 capture_output=True, text=True, timeout=10)
            proc = json.loads(res.stdout)[path].get("process") or {}
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
            continue
        out[role] = proc.get("helpers") or {}
    return out


def byte_compile_camex() -> None:
    """Measure camex as installed: pip and distribution packages install
    byte-compiled modules, but this tree may run with
    PYTHONDONTWRITEBYTECODE, and then every daemon compiles its sources at
    start (measured: +2.3 MiB peak RSS, +0.06-0.13 s start-up)."""
    import compileall
    import camex
    compileall.compile_dir(os.path.dirname(camex.__file__), quiet=1)


def _iperf(up, seconds: float, extra: tuple, udp: bool = False, reverse: bool = False) -> dict:
    """One iperf3 run through the tunnel, with the daemons' CPU around it;
    `reverse`: with -R (the server side sends, the client side receives)."""
    before = _cpu(up.daemons)
    idle_before = procstat.machine_idle_seconds()
    t0 = time.monotonic()
    try:
        res = iperf3(up.client, up.server, up.target, seconds=seconds,
                     extra=(("-R",) if reverse else ()) + tuple(extra))
    except (LabError, OSError, ValueError) as e:
        return {"error": str(e).splitlines()[0][:200]}
    wall = time.monotonic() - t0
    idle = procstat.machine_idle_seconds() - idle_before
    after = _cpu(up.daemons)
    used = {r: (after[r][0] or 0) - (before[r][0] or 0) for r in before}
    cpu = sum(used.values())
    out = {"seconds": round(res.seconds, 3), "received_bytes": res.received_bytes,
           "sent_bytes": res.sent_bytes, "gbps": round(res.received_bps / 1e9, 4),
           "daemon_cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
           # As iperf3 itself reports it: which way the bytes went.
           "reverse": bool(res.raw.get("start", {}).get("test_start", {}).get("reverse")),
           "daemon_cpu_by_role": {r: round(v, 3) for r, v in used.items()},
           # Of that, the kernel's share on the daemons' behalf (syscalls,
           # copies, the UDP and TUN stacks they drive).
           "daemon_sys_by_role": {r: round((after[r][1] or 0) - (before[r][1] or 0), 3)
                                  for r in before},
           # Whole machine, all tenants: near 0 when the run is bound by the CPU.
           "machine_idle_cores": round(idle / wall, 2) if wall > 0 else None}
    if res.retransmits is not None:
        out["retransmits"] = res.retransmits
    if res.received_bytes:
        out["cpu_s_per_gb"] = round(cpu / (res.received_bytes / 1e9), 2) if up.daemons else None
    if udp:
        recv = res.raw["end"]["sum_received"]
        sent = res.raw["end"]["sum_sent"]
        payload = 64
        rx_packets = recv["bytes"] // payload
        out.update({"rx_packets": rx_packets, "tx_packets": sent["packets"],
                    "rx_pps": round(rx_packets / recv["seconds"]) if recv["seconds"] else 0,
                    "tx_pps": round(sent["packets"] / sent["seconds"]) if sent["seconds"] else 0,
                    "lost_percent": round(recv.get("lost_percent", 0.0), 2)})
        if up.daemons and rx_packets:
            out["cpu_us_per_packet"] = round(cpu / rx_packets * 1e6, 2)
    return out


def wait_quiet(max_cores: float, max_wait: float, log) -> float:
    """Wait (at most ``max_wait`` s) until other tenants of the machine keep
    at most ``max_cores`` busy over a 1-s window; return the last load seen."""
    t_end = time.monotonic() + max_wait
    load = 0.0
    while True:
        b0, o0, w0 = procstat.machine_busy_seconds(), procstat.own_cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        load = ((procstat.machine_busy_seconds() - b0) - (procstat.own_cpu_seconds() - o0)) \
            / (time.monotonic() - w0)
        if load <= max_cores or time.monotonic() >= t_end:
            break
    if load > max_cores:
        log(f"other tenants still keep {load:.2f} cores busy; measuring anyway")
    return round(load, 2)


def measure(entry, dur: Durations, log, attempts: int = 2) -> dict:
    """Measure one entry; a setup that fails is retried once (peers that
    race their own handshakes sometimes stall for longer than we wait)."""
    for attempt in range(attempts):
        r = _measure(entry, dur, log)
        if r["status"] != "failed" or "tcp1" in r or attempt == attempts - 1:
            return r
        log(f"{entry.name}: retrying the setup once")
    return r


def _measure(entry, dur: Durations, log) -> dict:
    r = {"name": entry.name, "group": entry.group, "status": "ok"}
    busy0, own0, w0 = procstat.machine_busy_seconds(), procstat.own_cpu_seconds(), time.monotonic()
    with StarTopology(clients=2, family=getattr(entry, "family", "ipv4")) as lab:
        try:
            up = entry.up(lab)
        except NotAvailable as e:
            r.update(status="not available", note=str(e))
            log(f"{entry.name}: not available: {e}")
            return r
        except Exception as e:  # a peer that fails to come up must not stop the bench
            lab.keep_logs = True
            r.update(status="failed", note=f"setup: {str(e).splitlines()[0][:200]}",
                     logs=lab.logdir)
            log(f"{entry.name}: setup failed ({type(e).__name__}): {e}\n(logs kept in {lab.logdir})")
            return r
        r["desc"] = up.desc
        r["startup_s"] = None if up.startup_s is None else round(up.startup_s, 4)
        r.update(up.extra)
        time.sleep(0.3)
        r["ping"] = _ping(up, dur.ping)
        # VmHWM after each phase shows which load grows a daemon's memory.
        hwm = {"idle": _hwm(up.daemons)}
        rev = entry.reverse
        r["direction"] = "reverse" if rev else "forward"
        # The TUNs' counters around the TCP run: super-packets or not.
        tuns = tunstat.locate(up.client, up.server, up.target)
        tun0 = tunstat.counters(tuns)
        r["tcp1"] = _iperf(up, dur.tcp, (), reverse=rev)
        if tuns:
            r["tun"] = tunstat.summary(
                tunstat.delta(tun0, tunstat.counters(tuns)),
                {role: tunstat.features(ns, ifname) for role, (ns, ifname) in tuns.items()},
                INNER_MTU, rev)
        hwm["tcp1"] = _hwm(up.daemons)
        r["tcp4"] = _iperf(up, dur.tcp, ("-P", "4"), reverse=rev)
        hwm["tcp4"] = _hwm(up.daemons)
        r["udp64"] = _iperf(up, dur.udp, ("-u", "-b", "0", "-l", "64"), udp=True, reverse=rev)
        hwm["udp64"] = _hwm(up.daemons)
        r["peak_rss_kib_after"] = hwm
        helpers = _helpers(up.daemons)
        r["daemons"] = {role: {"pid": p.pid, "cmd": os.path.basename(p.argv[0]),
                               "peak_rss_kib": procstat.peak_rss_kib(p.pid),
                               "rss_kib": procstat.rss_kib(p.pid),
                               "cpu_s_total": procstat.cpu_seconds(p.pid),
                               "alive": p.running(),
                               **({"helpers": helpers[role]} if helpers.get(role) else {})}
                        for role, p in up.daemons}
        dead = [role for role, d in r["daemons"].items() if not d["alive"]]
        if dead:
            r["status"] = "failed"
            r["note"] = f"daemon died during the run: {', '.join(dead)}"
            lab.keep_logs = True
            r["logs"] = lab.logdir
        errors = [f"{k}: {r[k]['error']}" for k in ("tcp1", "tcp4", "udp64") if "error" in r[k]]
        if errors:
            r["note"] = "; ".join(([r["note"]] if "note" in r else []) + errors)
    wall = time.monotonic() - w0
    other = (procstat.machine_busy_seconds() - busy0) - (procstat.own_cpu_seconds() - own0)
    r["other_tenants_cores"] = round(max(other, 0.0) / wall, 2)
    r["wall_s"] = round(wall, 1)
    log(f"{entry.name}: " + report.one_line(r))
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2-second iperf3 runs, 10 pings")
    ap.add_argument("--only", help="comma-separated entry names (see --list)")
    ap.add_argument("--skip", help="comma-separated entry names to leave out")
    ap.add_argument("--list", action="store_true", help="list the entries and exit")
    ap.add_argument("--runs", type=int, default=1,
                    help="measure every entry this many times (interleaved); the table "
                         "shows medians")
    ap.add_argument("--quiet-max", type=float, default=0.3,
                    help="before each entry wait until other tenants use at most this "
                         "many cores (default 0.3)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="seconds to wait for that at most (default 10, 0 with --quick)")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the bench and everything it starts at this niceness (e.g. -10: "
                         "on a shared machine, other tenants at nice 0 then disturb less)")
    ap.add_argument("--fleet", metavar="N,N",
                    help="also the camera-fleet rows (bench/fleet.py) for these client counts, "
                         "with FLEET_SERVERS and a receiving client, 2-s steps; their section "
                         "goes into the report (`make bench` passes --fleet 10,100)")
    ap.add_argument("--out", help="results name under bench/results (default latest, "
                                  "or quick with --quick/--only)")
    args = ap.parse_args(argv)
    if args.list:
        for e in ENTRIES:
            print(f"{e.name:24} {e.group}")
        return 0
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 1
    names = [e.name for e in ENTRIES]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.skip:
        names = [n for n in names if n not in {s.strip() for s in args.skip.split(",")}]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"bench: unknown entry {', '.join(unknown)} (known: {', '.join(BY_NAME)})",
              file=sys.stderr)
        return 1
    out = args.out or ("quick" if (args.quick or args.only) else "latest")
    if args.nice:
        # Inherited by every daemon, iperf3 and ping the bench starts.
        os.nice(args.nice)
    dur = Durations(args.quick)
    byte_compile_camex()

    def log(msg):
        print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", flush=True)

    t0 = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0 if args.quick else 10)
    by_name: dict = {n: [] for n in names}
    for rnd in range(args.runs):
        # Interleaved rounds, the order rotated each round, so that a noisy
        # minute on a shared machine does not hit all runs of one tunnel.
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            entry = BY_NAME[name]
            if by_name[name] and by_name[name][-1]["status"] == "not available":
                continue
            before = wait_quiet(args.quiet_max, quiet_wait, log) if quiet_wait > 0 else None
            try:
                rec = measure(entry, dur, log)
            except Exception as e:
                traceback.print_exc()
                rec = {"name": name, "group": entry.group, "status": "failed",
                       "note": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            rec["other_tenants_before"] = before
            rec["round"] = rnd + 1
            by_name[name].append(rec)
    results = [report.combine(by_name[n]) for n in names]
    fleet_doc = None
    if args.fleet:
        from . import fleet

        f0, f_started = time.monotonic(), datetime.datetime.now(datetime.timezone.utc)
        counts = [int(x) for x in args.fleet.split(",") if x.strip()]
        runs = fleet.run(counts, list(FLEET_SERVERS), ["client"], FLEET_STEP_S, log,
                         max_steps=FLEET_MAX_STEPS)
        fleet_doc = fleet.document(runs, f"python -m bench.run ... --fleet {args.fleet}",
                                   f_started, (time.monotonic() - f0) / 60, FLEET_STEP_S)
    doc = {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "minutes": round((time.monotonic() - t0) / 60, 1),
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"runs": args.runs, "nice": args.nice, "quiet_max": args.quiet_max, "quiet_wait": quiet_wait,
                     "tcp_seconds": dur.tcp, "udp_seconds": dur.udp, "ping_count": dur.ping,
                     "inner_mtu": INNER_MTU, "inner_mtu6": INNER_MTU6, "udp_payload": 64, "camex_byte_compiled": True},
        "machine": report.machine_info(),
        "entries": results,
    }
    if fleet_doc is not None:
        doc["fleet"] = fleet_doc
    os.makedirs(RESULTS_DIR, exist_ok=True)
    # A bare name goes under bench/results; a path is taken as given.
    base = out if os.sep in out else os.path.join(RESULTS_DIR, out)
    os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(report.markdown(doc, os.path.basename(base) + ".png"))
    try:
        report.chart(doc, base + ".png")
    except ImportError as e:
        log(f"no chart: {e}")
    if out == "latest":
        report.update_readme(doc, README)
    log(f"wrote {base}.md, .json, .png ({doc['minutes']} min)")
    print(report.table(doc))
    if fleet_doc is not None:
        print(report.fleet_table(fleet_doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

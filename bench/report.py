"""Turning bench results into the markdown table, the goal ratios and the chart.

Input is the JSON document bench/run.py writes (results/NAME.json), so a
report can be re-made without measuring again:

    python -m bench.report bench/results/latest.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Optional

PACKAGES = ("iperf3", "wireguard-go", "wireguard-tools", "openvpn", "fastd", "tinc")


# ---------------------------------------------------------------- machine


def _cmd(argv) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info() -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    osname = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except FileNotFoundError:
        pass
    versions = {}
    for p in PACKAGES:
        v = _cmd(["dpkg-query", "-W", "-f=${Version}", p])
        versions[p] = v or "not installed"
    py = {}
    for mod in ("camex", "cryptography", "pyroute2"):
        try:
            from importlib.metadata import version
            py[mod] = version(mod)
        except Exception:
            py[mod] = "?"
    from . import fetch
    st = fetch.read_state()
    if st.get("binary"):
        versions[f"{st['package']} (fetched from {st['suite']})"] = st["debian_version"]
    elif st.get("error"):
        versions[f"{st.get('package', 'wireguard-go')} (fetch)"] = "not available"
    here = os.path.dirname(os.path.abspath(__file__))
    commit = _cmd(["git", "-C", here, "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", here, "status", "--porcelain", "--untracked-files=no", "--", "camex"])
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(), "os": osname,
        "python": platform.python_version(), "python_packages": py,
        "debian_packages": versions,
        "camex_commit": commit + ("+local changes" if dirty else ""),
    }


# ---------------------------------------------------------------- figures


def _get(r: dict, *path):
    for p in path:
        if not isinstance(r, dict) or r.get(p) is None:
            return None
        r = r[p]
    return r


def peak_rss_mib(r: dict) -> Optional[float]:
    vals = [d["peak_rss_kib"] for d in (r.get("daemons") or {}).values() if d.get("peak_rss_kib")]
    return max(vals) / 1024 if vals else None


def combine(runs: list) -> dict:
    """One record per entry from its runs: the first measured run carries
    the description and the daemons; all runs stay under "runs"."""
    measured = [r for r in runs if "tcp1" in r]
    base = dict(measured[0] if measured else runs[0])
    base["runs"] = runs
    if measured:
        base["status"] = "ok" if any(r["status"] == "ok" for r in measured) else base["status"]
    return base


def figures(r: dict) -> dict:
    """The numbers of one table row (None where there is none): medians over
    the runs that measured something (peak RSS: the largest)."""
    runs = [x for x in r.get("runs", []) if "tcp1" in x]
    if len(runs) <= 1:
        return _figures_one(r)
    per = [_figures_one(x) for x in runs]
    out = {}
    for key in per[0]:
        vals = sorted(v[key] for v in per if v[key] is not None)
        if not vals:
            out[key] = None
        elif key == "rss":
            out[key] = vals[-1]
        else:
            mid = len(vals) // 2
            out[key] = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
    return out


def _figures_one(r: dict) -> dict:
    return {
        "tcp1": _get(r, "tcp1", "gbps"),
        "tcp4": _get(r, "tcp4", "gbps"),
        "kpps": (_get(r, "udp64", "rx_pps") or 0) / 1e3 if _get(r, "udp64", "rx_pps") is not None else None,
        # Median of the replies when recorded (older results: ping's average).
        "rtt": _get(r, "ping", "rtt_median_ms") or _get(r, "ping", "rtt_avg_ms"),
        "rss": peak_rss_mib(r),
        "cpu_gb": _get(r, "tcp1", "cpu_s_per_gb"),
        "startup": r.get("startup_s") if r.get("group") != "baseline" else None,
        "cpu_pkt": _get(r, "udp64", "cpu_us_per_packet"),
        "other": r.get("other_tenants_cores"),
        # Average bytes per TUN read of the sending daemon during TCP 1.
        "tun_read": _get(r, "tun", "read_avg_bytes"),
    }


def _f(v, fmt) -> str:
    return "–" if v is None else fmt % v


def one_line(r: dict) -> str:
    if r["status"] != "ok" and "tcp1" not in r:
        return f"{r['status']}: {r.get('note', '')}"
    f = figures(r)
    return (f"tcp1 {_f(f['tcp1'], '%.3f')} Gbit/s, tcp4 {_f(f['tcp4'], '%.3f')}, "
            f"udp64 {_f(f['kpps'], '%.1f')} kpps, rtt {_f(f['rtt'], '%.3f')} ms, "
            f"rss {_f(f['rss'], '%.1f')} MiB, {_f(f['cpu_gb'], '%.1f')} cpu-s/GB, "
            f"startup {_f(f['startup'], '%.3f')} s, other tenants {_f(f['other'], '%.2f')} cores"
            + (f" [{r['note']}]" if r.get("note") else ""))


COLUMNS = ("| tunnel | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | UDP 64 B rx kpps | "
           "RTT idle ms (median) | peak RSS MiB | CPU s per GB | CPU µs per 64 B packet | start-up s | "
           "TUN read B (TCP 1) | other load (cores) |")


def _tun_read(avg, mtu) -> str:
    """Average TUN read of the sender; "super" when above the MTU (only
    super-packets can make it so)."""
    if avg is None:
        return "–"
    return f"{avg:.0f}" + (" super" if mtu and avg > mtu else "")


def table(doc: dict) -> str:
    lines = [COLUMNS, "|" + "---|" * (COLUMNS.count("|") - 1)]
    for r in doc["entries"]:
        if r["status"] != "ok" and "tcp1" not in r:
            lines.append(f"| {r['name']} | {r['status']}: {r.get('note', '')} |"
                         + " |" * (COLUMNS.count("|") - 3))
            continue
        f = figures(r)
        lines.append("| " + " | ".join([
            r["name"] + ("" if r["status"] == "ok" else f" ({r['status']})"),
            _f(f["tcp1"], "%.3f"), _f(f["tcp4"], "%.3f"), _f(f["kpps"], "%.1f"),
            _f(f["rtt"], "%.3f"), _f(f["rss"], "%.1f"), _f(f["cpu_gb"], "%.1f"),
            _f(f["cpu_pkt"], "%.1f"), _f(f["startup"], "%.3f"),
            _tun_read(f["tun_read"], doc.get("settings", {}).get("inner_mtu")),
            _f(f["other"], "%.2f")]) + " |")
    return "\n".join(lines) + "\n"


def _best_peer(doc, key, better=max):
    """(figure, name) of the best of every peer of this run (group "peer",
    whatever its name or version) that measured ``key``; (None, None) if
    none did."""
    vals = [(figures(r)[key], r["name"]) for r in doc["entries"]
            if r["group"] == "peer" and figures(r).get(key) is not None]
    return better(vals) if vals else (None, None)


def _row(doc, name) -> Optional[dict]:
    for r in doc["entries"]:
        if r["name"] == name and "tcp1" in r:
            return figures(r)
    return None


# The goals, each a ratio within one run: camex v2 point to point against
# the best peer (TCP, 64-byte UDP), against the encrypted floor
# (naive-python-aead: idle RTT, memory), and the relay against point to point.
TCP_GOAL = 2.0          # camex v2 TCP 1 stream >= this x the best peer's
RELAY_GOAL = 0.7        # camex v2 relay >= this x camex v2 point to point (TCP 1)
RTT_FLOOR_GOAL = 1.25   # idle RTT <= this x naive-python-aead's
RSS_FLOOR_MIB = 1.0     # each daemon <= naive-python-aead's peak + this
ENC_FLOOR = "naive-python-aead"
# The TCP floors: offloads, one AEAD per super-packet; and with a header
# per datagram glued in and gathered out, as camex's BULK framing does.
BULK_FLOORS = ("naive-python-bulk", "naive-python-bulk-framed")
# The relay's floor: one thread that receives, opens, seals and sends each
# framed train, between two framed floor tunnels; set against the framed
# point-to-point floor it says how far any relay on these libraries gets.
RELAY_FLOOR = "naive-python-framed-relay"


def goals(doc: dict) -> str:
    """The performance goals as ratios, from this run only; every line
    against a peer names the peer that was best at that figure."""
    out = []
    p2p, relay = _row(doc, "camex-v2-p2p"), _row(doc, "camex-v2-relay")
    legacy = _row(doc, "camex-relay-enc")
    floor_row = _row(doc, ENC_FLOOR)
    best_tcp, best_tcp_name = _best_peer(doc, "tcp1")
    best_pps, best_pps_name = _best_peer(doc, "kpps")

    def ratio(a, b):
        return None if a is None or b in (None, 0) else a / b

    def line(goal, value, ok):
        mark = "n/a" if ok is None else ("met" if ok else "NOT met")
        out.append(f"| {goal} | {value} | {mark} |")

    out.append("| goal | this run | |")
    out.append("|---|---|---|")
    x = ratio(p2p and p2p["tcp1"], best_tcp)
    line(f"camex v2 TCP 1 stream >= {TCP_GOAL:g} x best peer"
         + (f" ({best_tcp_name} {best_tcp:.3f} Gbit/s)" if best_tcp else ""),
         "camex-v2-p2p not available" if p2p is None else
         "no peer in this run" if x is None else f"{p2p['tcp1']:.3f} Gbit/s = {x:.2f} x",
         None if x is None else x >= TCP_GOAL)
    for floor_name in BULK_FLOORS:
        bulk = _row(doc, floor_name)
        x = ratio(bulk and bulk["tcp1"], best_tcp)
        if x is None:
            continue
        # The least a Python tunnel with offloads does per super-packet
        # (and with a framing like camex's): if it stays under the goal, no
        # daemon on the same libraries and system calls reaches it.
        line(f"(the TCP floor: {floor_name} against the best peer, and camex v2 against it)",
             f"{bulk['tcp1']:.3f} Gbit/s = {x:.2f} x at {_f(bulk['cpu_gb'], '%.2f')} CPU s/GB"
             + ("" if p2p is None else f"; camex v2 {ratio(p2p['tcp1'], bulk['tcp1']):.2f} x "
                f"the floor at {_f(p2p['cpu_gb'], '%.2f')} CPU s/GB"),
             x >= TCP_GOAL)
    x = ratio(relay and relay["tcp1"], p2p and p2p["tcp1"])
    line(f"camex v2 relay >= {RELAY_GOAL:g} x camex v2 point to point (TCP 1)",
         "needs camex-v2-p2p and camex-v2-relay" if x is None else f"{x:.2f} x",
         None if x is None else x >= RELAY_GOAL)
    relay_floor, framed_floor = _row(doc, RELAY_FLOOR), _row(doc, BULK_FLOORS[1])
    x = ratio(relay_floor and relay_floor["tcp1"], framed_floor and framed_floor["tcp1"])
    if x is not None:
        # The least a relay does against the least point to point does: if
        # it stays under the goal, no relay on these libraries reaches it.
        line(f"(the relay floor: {RELAY_FLOOR} against {BULK_FLOORS[1]}, and camex v2 relay "
             "against it)",
             f"{relay_floor['tcp1']:.3f} Gbit/s = {x:.2f} x at "
             f"{_f(relay_floor['cpu_gb'], '%.2f')} CPU s/GB"
             + ("" if relay is None else f"; camex v2 relay {ratio(relay['tcp1'], relay_floor['tcp1']):.2f} x "
                f"the relay floor at {_f(relay['cpu_gb'], '%.2f')} CPU s/GB"),
             x >= RELAY_GOAL)
    floor_rtt = floor_row and floor_row["rtt"]
    for name, row in (("camex-v2-p2p", p2p), ("camex-v2-relay", relay), ("camex-relay-enc", legacy)):
        if row is None:
            continue
        x = ratio(row["rtt"], floor_rtt)
        line(f"{name} idle RTT <= {RTT_FLOOR_GOAL:g} x the encrypted floor ({ENC_FLOOR} "
             f"{_f(floor_rtt, '%.3f')} ms)",
             f"{_f(row['rtt'], '%.3f')} ms" + (f" = {x:.2f} x" if x is not None else
                                               f" (no {ENC_FLOOR} in this run)"),
             None if x is None else x <= RTT_FLOOR_GOAL)
        x = ratio(row["kpps"], best_pps)
        line(f"{name} UDP 64 B pps >= best peer ({best_pps_name} {_f(best_pps, '%.1f')} kpps)",
             f"{_f(row['kpps'], '%.1f')} kpps" + (f" = {x:.2f} x" if x is not None else ""),
             None if x is None else x >= 1.0)
    x = ratio(_row(doc, "camex-relay-enc") and _row(doc, "camex-relay-enc")["tcp1"],
              _row(doc, "camex-p2p-enc") and _row(doc, "camex-p2p-enc")["tcp1"])
    if x is not None:
        line("(legacy, for comparison) camex-relay-enc / camex-p2p-enc (TCP 1)", f"{x:.2f} x",
             x >= RELAY_GOAL)
    rss_cap = None if floor_row is None or floor_row["rss"] is None \
        else floor_row["rss"] + RSS_FLOOR_MIB
    for r in doc["entries"]:
        if r["group"] != "camex" or "daemons" not in r:
            continue
        f = figures(r)
        worst = f["rss"]
        line(f"{r['name']}: each daemon <= {ENC_FLOOR} + {RSS_FLOOR_MIB:g} MiB resident"
             + (f" ({rss_cap:.1f} MiB)" if rss_cap is not None else ""),
             f"max {_f(worst, '%.1f')} MiB" + ("" if rss_cap is not None else
                                               f" (no {ENC_FLOOR} in this run)"),
             None if rss_cap is None or worst is None else worst <= rss_cap)
        s = f["startup"]
        line(f"{r['name']}: start to usable tunnel < 0.5 s", _f(s, "%.3f s"),
             None if s is None else s < 0.5)
    return "\n".join(out) + "\n"


def tun_reads(doc: dict) -> str:
    """Per tunnel with a TUN: the version it ran (peers), the sending TUN's
    TSO (what the daemon asked for with TUNSETOFFLOAD), the average TUN
    read and write during TCP 1, and whether the reads were super-packets."""
    mtu = doc.get("settings", {}).get("inner_mtu")
    out = ["| tunnel | version | sender's TUN TSO | avg TUN read B (sender) | "
           "avg TUN write B (receiver) | super-packets |", "|---|---|---|---|---|---|"]
    for r in doc["entries"]:
        t = r.get("tun")
        if not t and not r.get("version"):
            continue
        t = t or {}
        tso = t.get("sender_tso")
        avg = figures(r)["tun_read"]
        sp = None if avg is None or not mtu else avg > mtu
        out.append(f"| {r['name']} | {r.get('version', '–')} | "
                   f"{'–' if tso is None else ('on' if tso else 'off')} | {_f(avg, '%.0f')} | "
                   f"{_f(t.get('write_avg_bytes'), '%.0f')} | "
                   f"{'–' if sp is None else ('yes' if sp else 'no')} |")
    return "\n".join(out) + "\n" if len(out) > 2 else ""


# The default command line (no --protocol) must carry what --protocol v2
# carries, both ways: a default client that misses a fast path shows here.
DEFAULT_PAIRS = tuple((f"camex-default-{t}{d}", f"camex-v2-{t}{d}")
                      for t in ("p2p", "relay") for d in ("", "-rev"))
DEFAULT_MIN_RATIO = 0.9   # below this (either figure) the default command line lags


def defaults(doc: dict) -> str:
    """Each default-command-line row against its --protocol v2 twin, same
    topology and direction: TCP 1 stream and UDP 64 B, as ratios."""
    out = ["| default command line / --protocol v2 | TCP 1 stream Gbit/s | UDP 64 B kpps | "
           f">= {DEFAULT_MIN_RATIO:g} x |", "|---|---|---|---|"]
    for default, v2 in DEFAULT_PAIRS:
        a, b = _row(doc, default), _row(doc, v2)
        if a is None or b is None:
            continue
        cells, xs = [], []
        for key, fmt in (("tcp1", "%.3f"), ("kpps", "%.1f")):
            x = None if a[key] is None or not b[key] else a[key] / b[key]
            cells.append(f"{_f(a[key], fmt)} / {_f(b[key], fmt)} = {_f(x, '%.2f x')}")
            xs.append(x)
        ok = None if None in xs else all(x >= DEFAULT_MIN_RATIO for x in xs)
        mark = "n/a" if ok is None else ("met" if ok else "NOT met")
        out.append(f"| {default} / {v2} | {cells[0]} | {cells[1]} | {mark} |")
    return "\n".join(out) + "\n" if len(out) > 2 else ""


# The naive baselines that bound what any Python daemon can reach here
# (bench/naive_tunnel.py), from the least work to the least an encrypted
# tunnel must do.
FLOOR = (("naive-python", "select loop, plaintext"),
         ("naive-python-threads", "a blocked reader per direction, plaintext"),
         ("naive-python-aead", "as threads, ChaCha20-Poly1305 per packet, X25519 key"),
         ("naive-python-bulk", "as threads, TUN offloads, AES-256-GCM once per super-packet"),
         ("naive-python-bulk-framed", "as bulk, a 20-byte header per datagram, camex's cap"),
         (RELAY_FLOOR, "two framed tunnels through a relay that opens and seals each train"))


def floor(doc: dict) -> str:
    """The idle RTT and memory of the naive Python tunnels of this run next
    to the best peer. The RTT and memory goals are set against the
    encrypted one (goals()); where even it is slower than the best peer,
    that gap belongs to the interpreter and the crypto library, and no
    daemon built on them closes it."""
    rows = [(name, what, _row(doc, name)) for name, what in FLOOR]
    rows = [r for r in rows if r[2] is not None]
    if not rows:
        return ""
    best_rtt, best_rtt_name = _best_peer(doc, "rtt", min)
    out = ["| baseline (bench/naive_tunnel.py) | idle RTT ms | RTT / best peer | peak RSS MiB |",
           "|---|---|---|---|"]
    for name, what, f in rows:
        x = None if f["rtt"] is None or not best_rtt else f["rtt"] / best_rtt
        out.append(f"| {name}: {what} | {_f(f['rtt'], '%.3f')} | {_f(x, '%.2f x')} | "
                   f"{_f(f['rss'], '%.1f')} |")
    text = "\n".join(out) + "\n"
    enc = _row(doc, ENC_FLOOR)
    if enc is None:
        return text
    text += (f"\nThe idle-RTT and memory goals are set against {ENC_FLOOR} itself "
             f"(RTT <= {RTT_FLOOR_GOAL:g} x, resident memory <= + {RSS_FLOOR_MIB:g} MiB; "
             "see the goals).")
    if enc["rtt"] is not None and best_rtt is not None and enc["rtt"] > best_rtt:
        text += (f" Its idle RTT ({enc['rtt']:.3f} ms) is above the best peer's "
                 f"({best_rtt_name} {best_rtt:.3f} ms): in this run that gap belongs to "
                 "the interpreter and `cryptography`, below any daemon built on them.")
    return text + "\n"


# ---------------------------------------------------------------- fleet
# bench/fleet.py's results (`make bench-fleet`, and a smaller set in
# `make bench`): a server under N camera-like clients.

FLEET_GOALS = {"c_server_cpu": 1.5, "naive_cpu": 1.25, "rate_1000_vs_10": 0.9}


def fleet_rows(doc: dict) -> list[dict]:
    """One row per server x receiver x N: the figures of its best passing
    step (the highest offered rate relayed with under 0.1 % loss)."""
    rows = []
    ref = doc.get("settings", {}).get("start_rate")
    if ref is None:   # runs before it was recorded: the first step most rows share
        firsts = [r["steps"][0]["asked"] for r in doc.get("runs", []) if r.get("steps")]
        ref = max(set(firsts), key=firsts.count) if firsts else None
    for r in doc.get("runs", []):
        steps = r.get("steps") or []
        best = steps[r["best_step"]] if r.get("best_step") is not None else None
        # Every search starts at the same rate: there the servers' CPU per
        # datagram compares at equal load (at its best step each server
        # runs at its own rate, and a busier loop wakes up less per datagram).
        at_ref = next((st for st in steps if ref and st["asked"] == ref and st["passed"]), None)
        rows.append({
            "server": r["server"], "receiver": r["receiver"], "clients": r["clients"],
            "status": r.get("status", "ok"), "note": r.get("note"),
            "generator_bound": bool(r.get("generator_bound")),
            "max_kdps": None if best is None else best["achieved"] / 1e3,
            "server_us": None if best is None else best.get("server_cpu_us"),
            "server_sys_us": None if best is None else best.get("server_sys_us"),
            "server_us_ref": None if at_ref is None else at_ref.get("server_cpu_us"),
            "gen_us": None if best is None else best.get("gen_cpu_us"),
            "seal_us": None if best is None else best.get("gen_seal_us"),
            "achieved_ratio": None if best is None else best.get("achieved_ratio"),
            "rss_mib": None if r.get("rss_kib") is None else r["rss_kib"] / 1024,
            "hwm_mib": None if r.get("peak_rss_kib") is None else r["peak_rss_kib"] / 1024,
            "load": (r.get("load_before") or [None])[0],
            "steps": len(steps),
        })
    return rows


FLEET_COLUMNS = ("| server | receiver | N | max loss-free kdgram/s | server µs CPU / dgram "
                 "(of which kernel) | "
                 "server µs CPU / dgram at the start rate | server RSS MiB (VmHWM / VmRSS) | generator µs / dgram (send; seal) | "
                 "achieved / asked | load avg | steps |")


def fleet_table(doc: dict) -> str:
    lines = [FLEET_COLUMNS, "|" + "---|" * (FLEET_COLUMNS.count("|") - 1)]
    for r in fleet_rows(doc):
        head = f"| {r['server']} | {r['receiver']} | {r['clients']:,} |"
        if r["status"] != "ok":
            lines.append(head + f" {r['status']}: {r['note'] or ''} |" + " |" * 7)
            continue
        rate = _f(r["max_kdps"], "%.1f") + (" (generator-bound)" if r["generator_bound"] else "")
        lines.append(head + " " + " | ".join([
            rate, _f(r["server_us"], "%.2f") + (f" ({r['server_sys_us']:.2f})"
                                                if r.get("server_sys_us") is not None else ""),
            _f(r["server_us_ref"], "%.2f"),
            f"{_f(r['hwm_mib'], '%.1f')} / {_f(r['rss_mib'], '%.1f')}",
            f"{_f(r['gen_us'], '%.2f')}; {_f(r['seal_us'], '%.2f')}",
            _f(r["achieved_ratio"], "%.3f"), _f(r["load"], "%.2f"), str(r["steps"])]) + " |")
    return "\n".join(lines) + "\n"


def _fleet_get(rows, server, receiver, n, key):
    for r in rows:
        if (r["server"], r["receiver"], r["clients"]) == (server, receiver, n) and \
                r["status"] == "ok":
            return r[key]
    return None


def fleet_goals(doc: dict) -> str:
    """The fleet goals as ratios of this run, per receiver and N where both
    sides were measured."""
    rows = fleet_rows(doc)
    out = ["| goal | receiver | N | this run | |", "|---|---|---|---|---|"]

    def line(goal, recv, n, a, b, want, lower_is_goal):
        if a is None or not b:
            return
        x = a / b
        ok = x <= want if lower_is_goal else x >= want
        out.append(f"| {goal} | {recv} | {n:,} | {a:.2f} / {b:.2f} = {x:.2f} x | "
                   f"{'met' if ok else 'NOT met'} |")

    keys = sorted({(r["receiver"], r["clients"]) for r in rows})
    c_servers = sorted({r["server"] for r in rows if r["server"].startswith("c-server")})
    for recv, n in keys:
        cam = _fleet_get(rows, "camex", recv, n, "server_us")
        for cs in c_servers:
            line(f"camex legacy CPU / dgram <= {cs}'s / "
                 f"{FLEET_GOALS['c_server_cpu']:g}", recv, n, cam,
                 _fleet_get(rows, cs, recv, n, "server_us"),
                 1 / FLEET_GOALS["c_server_cpu"], True)
        kernel = _fleet_get(rows, "camex", recv, n, "server_sys_us")
        for cs in c_servers:
            c_total = _fleet_get(rows, cs, recv, n, "server_us")
            if kernel is not None and c_total:
                # The kernel's share alone against the goal's bound: where it
                # is above, no change to camex's own code reaches the goal.
                bound = c_total / FLEET_GOALS["c_server_cpu"]
                out.append(f"| (camex legacy's kernel time alone / dgram against {cs}'s / "
                           f"{FLEET_GOALS['c_server_cpu']:g}) | {recv} | {n:,} | "
                           f"{kernel:.2f} / {bound:.2f} = {kernel / bound:.2f} x | "
                           f"{'below: room in user space' if kernel < bound else 'above: out of reach in user space'} |")
        line(f"camex legacy CPU / dgram <= {FLEET_GOALS['naive_cpu']:g} x naive-relay's", recv,
             n, cam, _fleet_get(rows, "naive-relay", recv, n, "server_us"),
             FLEET_GOALS["naive_cpu"], True)
    for server in sorted({r["server"] for r in rows}):
        for recv in sorted({r["receiver"] for r in rows}):
            line(f"{server}: max rate at 1,000 clients >= "
                 f"{FLEET_GOALS['rate_1000_vs_10']:g} x at 10", recv, 1000,
                 _fleet_get(rows, server, recv, 1000, "max_kdps"),
                 _fleet_get(rows, server, recv, 10, "max_kdps"),
                 FLEET_GOALS["rate_1000_vs_10"], False)
    return "\n".join(out) + "\n" if len(out) > 2 else ""


def update_readme_fleet(doc: dict, path: str) -> None:
    """Quote a full fleet run (results/fleet.md) in bench/README.md between
    two `<!-- fleet-summary -->` markers."""
    m = doc["machine"]
    g = fleet_goals(doc)
    block = (f"\nFrom `results/fleet.md`, run {doc['started']} ({doc.get('minutes', '?')} min, "
             f"`{doc['command'].strip()}`; {m['cores']} x {m['cpu']}, camex at "
             f"{m['camex_commit']}):\n\n" + fleet_table(doc) + ("\n" + g if g else ""))
    _quote(path, "<!-- fleet-summary -->", block, opened=False)


def _quote(path: str, marker: str, block: str, opened: bool) -> None:
    """Put `block` between the two `marker`s of the file at `path` (or
    after a lone one, where `opened`); a file without them stays as it is."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return
    parts = text.split(marker)
    if len(parts) != 3 and not (opened and len(parts) == 2):
        return
    with open(path, "w") as f:
        f.write(parts[0] + marker + block + marker + parts[-1])


def fleet_markdown(doc: dict) -> str:
    """results/fleet.md: the fleet section with its run's heading."""
    m = doc["machine"]
    return "\n".join([
        "# camex bench: a server under a camera fleet (bench/fleet.py)",
        "",
        f"Run {doc['started']} ({doc.get('minutes', '?')} min): `{doc['command'].strip()}`. "
        f"Machine: {m['cores']} cores ({m['cpu']}), kernel {m['kernel']}, Python "
        f"{m['python']}, camex at {m['camex_commit']}.",
        "",
        fleet_section(doc),
    ])


def fleet_section(doc: dict) -> str:
    """The fleet results as a report section (its own file or inside the
    bench report)."""
    s = doc.get("settings", {})
    g = fleet_goals(doc)
    return "\n".join([
        "## Camera fleet: N legacy (or v2) clients through one server",
        "",
        fleet_table(doc),
        f"Each client: one UDP socket, one {s.get('inner_size', 1200)}-byte inner IPv4/UDP "
        "packet per datagram, no offloads; legacy clients are models of the deployed C client "
        "(lab/cclient.py: encrypted, REGISTER with a manual address), v2 clients camex's own "
        "v2 client core. All N send round-robin to one receiver: another client (\"client\") "
        "or the server's own TUN (\"tun\", --server-tun). Max loss-free: the highest rate "
        f"(datagrams/s offered) that lost under {s.get('max_loss', 0.001) * 100:g} % in a "
        f"{s.get('step_seconds', '?')}-s step, loss counted exactly by the sequence numbers "
        "in the inner payloads (the rate doubled until a step lost, then bisected). Server "
        "µs CPU: utime+stime of the server process over that step per datagram relayed; "
        f"at the start rate: the same in the search's first step "
        f"({(s.get('start_rate') or 0) / 1e3:g} k/s for every row, if it passed), where all "
        "servers carry the same load. "
        "Generator µs: its send loop's CPU per datagram sent; seal: what sealing cost it "
        "per datagram, done before the step. Achieved / asked: the generator's offered "
        f"rate against the asked one (below {s.get('keep_up', 0.95):g} on a passing step the "
        "search stops and the row says generator-bound). Load avg: the 1-minute load "
        "average before the row (2 cores shared with other work: compare rows of one run).",
        "",
        *(["### Fleet goals (ratios from this run)", "", g] if g else []),
    ])


# The cost of IPv6 (underlay and inside) in one run: each IPv6 entry
# against its IPv4 twin, same topology, direction and crypto.
IPV6_PAIRS = (("camex-v2-relay-ipv6", "camex-v2-relay"), ("wireguard-go-ipv6", "wireguard-go"))
IPV6_FIGURES = (("tcp1", "TCP 1 stream Gbit/s", "%.3f"), ("kpps", "UDP 64 B kpps", "%.1f"),
                ("rtt", "RTT ms", "%.3f"), ("cpu_gb", "CPU s per GB", "%.1f"))


def ipv6_cost(doc: dict) -> str:
    """Each IPv6 row over its IPv4 twin, figure by figure, as ratios
    (IPv6 / IPv4: below 1 for throughput, above 1 for RTT and CPU means
    IPv6 costs more); empty when no pair has both rows in this run."""
    out = ["| IPv6 / IPv4 | " + " | ".join(h for _, h, _ in IPV6_FIGURES) + " |",
           "|---|" + "---|" * len(IPV6_FIGURES)]
    for six, four in IPV6_PAIRS:
        a, b = _row(doc, six), _row(doc, four)
        if a is None or b is None:
            continue
        cells = []
        for key, _, fmt in IPV6_FIGURES:
            x = None if a.get(key) is None or not b.get(key) else a[key] / b[key]
            cells.append(f"{_f(a.get(key), fmt)} / {_f(b.get(key), fmt)} = {_f(x, '%.2f x')}")
        out.append(f"| {six} / {four} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n" if len(out) > 2 else ""


def _ipv6_part(doc: dict) -> list:
    """The markdown lines of the IPv6 section (none without a pair)."""
    six = ipv6_cost(doc)
    if not six:
        return []
    return ["## The cost of IPv6 (underlay and inside) against IPv4", "",
            "Rows named -ipv6 run over IPv6-only veths with IPv6 inside, inner MTU "
            f"{doc['settings'].get('inner_mtu6', '?')} (the largest camex v2 fits over IPv6); "
            "each is divided by its IPv4 twin of this run.", "", six]


def markdown(doc: dict, png_name: str) -> str:
    m = doc["machine"]
    s = doc["settings"]
    deb = ", ".join(f"{k} {v}" for k, v in m["debian_packages"].items())
    pyp = ", ".join(f"{k} {v}" for k, v in m["python_packages"].items())
    runs_note = (f" Figures are medians of {s['runs']} interleaved runs (peak RSS: the "
                 "largest)." if s.get("runs", 1) > 1 else "")
    if s.get("nice"):
        runs_note += (f" The bench and all it started ran at nice {s['nice']}, so that other "
                      "tenants at nice 0 disturbed less.")
    fl = floor(doc)
    dflt = defaults(doc)
    tuns = tun_reads(doc)
    parts = [
        "# camex bench: tunnels side by side",
        "",
        f"Run {doc['started']} ({doc['minutes']} min): `{doc['command'].strip()}`.",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB, kernel {m['kernel']}, "
        f"{m['os']}; Python {m['python']} ({pyp}); camex at {m['camex_commit']}.",
        f"Packages: {deb}.",
        "",
        table(doc),
        f"Three namespaces c1 - srv - c2 over veth (MTU 1500); every tunnel has inner MTU "
        f"{s['inner_mtu']}. Point-to-point tunnels run c1 -> srv; camex relays c1 -> srv -> c2 "
        f"(raw-routed is that path without a tunnel); rows named -rev run every iperf3 with -R "
        f"(the server side sends, the client in c1 receives), camex-default-* run camex "
        f"without --protocol, as users start it. TCP: iperf3 {s['tcp_seconds']:g} s, "
        f"receiver goodput. UDP: iperf3 -u -b 0 -l {s['udp_payload']} for {s['udp_seconds']:g} s, "
        f"packets/s that reached the receiver. RTT: median of {s['ping_count']} pings 20 ms apart "
        "on the idle tunnel. Peak RSS: VmHWM of the largest daemon of the tunnel. CPU s per GB: "
        "utime+stime of all the tunnel's daemons (two for point to point, three for a relay) "
        "during the TCP 1-stream run, per GB received; CPU µs per packet: the same during the "
        "UDP run, per packet received. Start-up: daemons launched (camex: "
        "clients launched, server already listening) to the first echo reply through the tunnel. "
        "Other load: cores that processes outside the bench kept busy meanwhile (this machine "
        "is shared; a high value means noisy figures)." + runs_note,
        "",
        f"![chart]({png_name})",
        "",
        "## Performance goals (ratios from this run)",
        "",
        goals(doc),
        *_ipv6_part(doc),
        *(["## The default command line against --protocol v2", "", dflt] if dflt else []),
        *(["## TUN reads: super-packets or one packet per read", "",
           "From the TUN devices' own packet and byte counters during TCP 1 stream (the "
           "sending daemon reads what the TUN transmits, the receiving one writes what it "
           "receives); one packet per read can never average above the MTU "
           f"({s['inner_mtu']}), so a larger average means super-packets (TUN offloads).",
           "", tuns] if tuns else []),
        *(["## The floor: naive Python tunnels in this run", "", fl] if fl else []),
        *([fleet_section(doc["fleet"])] if doc.get("fleet") else []),
        "## Configurations",
        "",
    ]
    for r in doc["entries"]:
        text = r.get("desc") or r.get("note") or ""
        extra = ""
        if r.get("daemons"):
            extra = "; RSS per daemon, peak (VmHWM) / at the end: " + ", ".join(
                f"{role} {d['peak_rss_kib'] / 1024:.1f} / {(d.get('rss_kib') or 0) / 1024:.1f} MiB"
                + (" (short-lived helpers, gone: " + ", ".join(
                    f"{n} x{h['runs']} peak {h['peak_rss_kib'] / 1024:.1f} MiB"
                    for n, h in sorted(d["helpers"].items())) + ")" if d.get("helpers") else "")
                for role, d in r["daemons"].items() if d.get("peak_rss_kib"))
        after = r.get("peak_rss_kib_after") or {}
        if after.get("idle") and after.get("udp64"):
            grew = [f"{role} {after['idle'][role] / 1024:.1f} idle -> "
                    + " -> ".join(f"{after[ph][role] / 1024:.1f}" for ph in ("tcp1", "tcp4", "udp64")
                                  if after.get(ph) and after[ph].get(role))
                    for role in after["idle"] if after["idle"].get(role)]
            if grew:
                extra += "; VmHWM MiB idle -> after TCP x1, x4, UDP: " + ", ".join(grew)
        if r.get("server_ready_s") is not None:
            extra += f"; server listening {r['server_ready_s']:.3f} s after launch"
        if r.get("tunnel_up_logged_s") is not None:
            extra += (f"; client logged \"tunnel up\" {r['tunnel_up_logged_s']:.3f} s after "
                      f"launch, first echo reply at {r['startup_s']:.3f} s")
        note = f" — {r['note']}" if r.get("note") and r.get("desc") else ""
        parts.append(f"- **{r['name']}** ({r['status']}): {text}{extra}{note}")
    return "\n".join(parts) + "\n"


def update_readme(doc: dict, path: str) -> None:
    """Quote the table and the goals of a full run in bench/README.md,
    between two `<!-- latest-summary -->` markers."""
    m = doc["machine"]
    sections = [goals(doc), defaults(doc), tun_reads(doc), floor(doc), ipv6_cost(doc)]
    block = (f"\n\nFrom `results/latest.md`, run {doc['started']} ({m['cores']} x {m['cpu']}, "
             f"kernel {m['kernel']}, camex at {m['camex_commit']}):\n\n"
             + table(doc) + "".join("\n" + x for x in sections if x) + "\n")
    _quote(path, "<!-- latest-summary -->", block, opened=True)


# ---------------------------------------------------------------- chart

_COLORS = {"baseline": "#9e9e9e", "camex": "#d62728", "peer": "#1f77b4"}


def chart(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r for r in doc["entries"] if "tcp1" in r]
    names = [r["name"] for r in rows]
    panels = [
        ("tcp1", "TCP 1 stream, Gbit/s (log)", True),
        ("tcp4", "TCP 4 streams, Gbit/s (log)", True),
        ("kpps", "UDP 64 B received, kpps", False),
        ("rtt", "idle RTT, ms (lower is better)", False),
        ("rss", "peak RSS of a daemon, MiB", False),
        ("cpu_gb", "daemon CPU s per GB (TCP 1)", False),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(16, 0.42 * len(rows) * 2 + 2.5))
    colors = [_COLORS.get(r["group"], "#333") for r in rows]
    y = list(range(len(rows)))
    for ax, (key, title, log) in zip(axes.flat, panels):
        vals = [figures(r)[key] for r in rows]
        ax.barh(y, [v or 0 for v in vals], color=colors)
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        pos = [v for v in vals if v]
        if log and pos and max(pos) / min(pos) > 20:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_title(title, fontsize=10)
        else:
            ax.set_title(title.replace(" (log)", ""), fontsize=10)
        for yi, v in zip(y, vals):
            ax.text(v or 0, yi, " n/a" if v is None else f" {v:.3g}", va="center", fontsize=7)
        ax.margins(x=0.25)
    m = doc["machine"]
    fig.suptitle(f"camex bench {doc['started']}: {m['cores']} x {m['cpu']}, kernel {m['kernel']}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    """`python -m bench.report RESULTS.json [--fleet FLEET.json]`: re-make the
    markdown (and chart) of a bench run, with the fleet results of
    FLEET.json as their own section; a fleet JSON alone re-makes its own
    report (results/fleet.md)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    fleet_path = None
    if "--fleet" in argv:
        i = argv.index("--fleet")
        if i + 1 >= len(argv):
            print("usage: python -m bench.report RESULTS.json [--fleet FLEET.json]",
                  file=sys.stderr)
            return 1
        fleet_path = argv[i + 1]
        del argv[i:i + 2]
    if not argv:
        print("usage: python -m bench.report RESULTS.json [--fleet FLEET.json]", file=sys.stderr)
        return 1
    with open(argv[0]) as f:
        doc = json.load(f)
    base = argv[0][:-5] if argv[0].endswith(".json") else argv[0]
    if "entries" not in doc and "runs" in doc:   # a fleet document on its own
        with open(base + ".md", "w") as f:
            f.write(fleet_markdown(doc))
        here = os.path.dirname(os.path.abspath(__file__))
        # Only the committed results/fleet.json is quoted (not a copy elsewhere).
        if os.path.abspath(base) == os.path.join(here, "results", "fleet"):
            update_readme_fleet(doc, os.path.join(here, "README.md"))
        print(fleet_table(doc))
        return 0
    if fleet_path:
        with open(fleet_path) as f:
            doc["fleet"] = json.load(f)
    with open(base + ".md", "w") as f:
        f.write(markdown(doc, os.path.basename(base) + ".png"))
    chart(doc, base + ".png")
    if os.path.basename(base) == "latest":
        update_readme(doc, os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md"))
    print(table(doc))
    if doc.get("fleet"):
        print(fleet_table(doc["fleet"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

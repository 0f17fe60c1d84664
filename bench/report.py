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
           "other load (cores) |")


def table(doc: dict) -> str:
    lines = [COLUMNS, "|" + "---|" * (COLUMNS.count("|") - 1)]
    for r in doc["entries"]:
        if r["status"] != "ok" and "tcp1" not in r:
            lines.append(f"| {r['name']} | {r['status']}: {r.get('note', '')} |" + " |" * 8)
            continue
        f = figures(r)
        lines.append("| " + " | ".join([
            r["name"] + ("" if r["status"] == "ok" else f" ({r['status']})"),
            _f(f["tcp1"], "%.3f"), _f(f["tcp4"], "%.3f"), _f(f["kpps"], "%.1f"),
            _f(f["rtt"], "%.3f"), _f(f["rss"], "%.1f"), _f(f["cpu_gb"], "%.1f"),
            _f(f["cpu_pkt"], "%.1f"), _f(f["startup"], "%.3f"), _f(f["other"], "%.2f")]) + " |")
    return "\n".join(lines) + "\n"


def _best_peer(doc, key, better=max):
    vals = [(figures(r)[key], r["name"]) for r in doc["entries"]
            if r["group"] == "peer" and figures(r).get(key) is not None]
    return better(vals) if vals else (None, None)


def _row(doc, name) -> Optional[dict]:
    for r in doc["entries"]:
        if r["name"] == name and "tcp1" in r:
            return figures(r)
    return None


def goals(doc: dict) -> str:
    """The performance goals as ratios, from this run only."""
    out = []
    p2p, relay = _row(doc, "camex-v2-p2p"), _row(doc, "camex-v2-relay")
    legacy = _row(doc, "camex-relay-enc")
    best_tcp, best_tcp_name = _best_peer(doc, "tcp1")
    best_rtt, best_rtt_name = _best_peer(doc, "rtt", min)
    best_pps, best_pps_name = _best_peer(doc, "kpps")

    def ratio(a, b):
        return None if a is None or b in (None, 0) else a / b

    def line(goal, value, ok):
        mark = "n/a" if ok is None else ("met" if ok else "NOT met")
        out.append(f"| {goal} | {value} | {mark} |")

    out.append("| goal | this run | |")
    out.append("|---|---|---|")
    x = ratio(p2p and p2p["tcp1"], best_tcp)
    line("camex v2 TCP 1 stream >= 5 x best peer"
         + (f" ({best_tcp_name} {best_tcp:.3f} Gbit/s)" if best_tcp else ""),
         "camex-v2-p2p not available" if p2p is None else
         "no peer in this run" if x is None else f"{x:.2f} x", None if x is None else x >= 5)
    x = ratio(relay and relay["tcp1"], p2p and p2p["tcp1"])
    line("camex relay >= 0.6 x camex point to point (TCP 1)",
         "needs camex-v2-p2p and camex-v2-relay" if x is None else f"{x:.2f} x",
         None if x is None else x >= 0.6)
    for name, row in (("camex-v2-p2p", p2p), ("camex-v2-relay", relay), ("camex-relay-enc", legacy)):
        if row is None:
            continue
        line(f"{name} idle RTT <= best peer ({best_rtt_name} {_f(best_rtt, '%.3f')} ms)",
             f"{_f(row['rtt'], '%.3f')} ms",
             None if row["rtt"] is None or best_rtt is None else row["rtt"] <= best_rtt)
        line(f"{name} UDP 64 B pps >= best peer ({best_pps_name} {_f(best_pps, '%.1f')} kpps)",
             f"{_f(row['kpps'], '%.1f')} kpps",
             None if row["kpps"] is None or best_pps is None else row["kpps"] >= best_pps)
    x = ratio(_row(doc, "camex-relay-enc") and _row(doc, "camex-relay-enc")["tcp1"],
              _row(doc, "camex-p2p-enc") and _row(doc, "camex-p2p-enc")["tcp1"])
    if x is not None:
        line("(legacy, for comparison) camex-relay-enc / camex-p2p-enc (TCP 1)", f"{x:.2f} x",
             x >= 0.6)
    for r in doc["entries"]:
        if r["group"] != "camex" or "daemons" not in r:
            continue
        f = figures(r)
        worst = f["rss"]
        line(f"{r['name']}: each daemon <= 20 MiB resident", f"max {worst:.1f} MiB",
             worst <= 20)
        s = f["startup"]
        line(f"{r['name']}: start to usable tunnel < 0.5 s", _f(s, "%.3f s"),
             None if s is None else s < 0.5)
    return "\n".join(out) + "\n"


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
         ("naive-python-aead", "as threads, ChaCha20-Poly1305 per packet, X25519 key"))
RSS_GOAL_MIB = 20


def floor(doc: dict) -> str:
    """The idle RTT and memory of the naive Python tunnels of this run next
    to the best peer and the 20 MiB goal: a goal the encrypted baseline
    misses is out of reach of any daemon on the same interpreter and
    crypto library, whatever it does on top."""
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
    enc = _row(doc, "naive-python-aead")
    said = []
    if enc and enc["rtt"] is not None and best_rtt is not None and enc["rtt"] > best_rtt:
        said.append(f"its idle RTT ({enc['rtt']:.3f} ms) is above the best peer's "
                    f"({best_rtt_name} {best_rtt:.3f} ms)")
    if enc and enc["rss"] is not None and enc["rss"] > RSS_GOAL_MIB:
        said.append(f"its peak RSS ({enc['rss']:.1f} MiB) is above {RSS_GOAL_MIB} MiB")
    if said:
        text += ("\nThe encrypted baseline does nothing but read, seal or open, and write, yet "
                 + " and ".join(said) + ": in this run "
                 + ("that goal is" if len(said) == 1 else "those goals are")
                 + " out of reach of any encrypted daemon built on this Python and "
                 "`cryptography`.\n")
    return text


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
        *(["## The floor: naive Python tunnels in this run", "", fl] if fl else []),
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
    marker = "<!-- latest-summary -->"
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return
    parts = text.split(marker)
    if len(parts) not in (2, 3):
        return
    m = doc["machine"]
    fl = floor(doc)
    dflt = defaults(doc)
    six = ipv6_cost(doc)
    block = (f"\n\nFrom `results/latest.md`, run {doc['started']} ({m['cores']} x {m['cpu']}, "
             f"kernel {m['kernel']}, camex at {m['camex_commit']}):\n\n"
             + table(doc) + "\n" + goals(doc) + "\n" + (dflt + "\n" if dflt else "")
             + (fl + "\n" if fl else ""))
    if six:
        block += six + "\n"
    tail = parts[2] if len(parts) == 3 else parts[1]
    with open(path, "w") as f:
        f.write(parts[0] + marker + block + marker + tail)


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
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 1
    with open(argv[0]) as f:
        doc = json.load(f)
    base = argv[0][:-5] if argv[0].endswith(".json") else argv[0]
    with open(base + ".md", "w") as f:
        f.write(markdown(doc, os.path.basename(base) + ".png"))
    chart(doc, base + ".png")
    if os.path.basename(base) == "latest":
        update_readme(doc, os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md"))
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measurement: a camex server holding N registered legacy clients (the
clients come from lab/loadgen.py, the one load generator).

Issue 6 asks that a server holding 10,000 registered clients use at most
4 KiB per client and relay as fast as with two. This measures both:

  1. a StarTopology with three client namespaces: c1 and c2 run real camex
     clients (manual, 10.0.0.2 and 10.0.0.3), c3 is the load generator;
  2. with only c1 and c2 registered: the server's resident memory and an
     iperf3 run c1 -> srv -> c2 (TCP, one stream);
  3. the generator registers N more clients (manual REGISTERs, plaintext or
     sealed with the passphrase as a legacy client would) from c3, each
     from its own UDP source port, and keeps them registered by repeating
     every REGISTER each REFRESH seconds as legacy clients do (the server
     forgets a client after 120 s of silence);
  4. once `camex status` counts them all: the server's resident memory
     again, and the same iperf3 run while the refreshes go on.

The clients are lab.loadgen.SpoofedLoad (the lab's load generator, the one
the ops tests use): one raw socket (IPPROTO_RAW, we write the IPv4 and UDP
headers ourselves), tens of thousands of source ports without a socket and
a file descriptor each. This module is the measurement and its report.

    python -m bench.load [--clients 10000] [--mode plain|enc|both] [--seconds 5]

Writes bench/results/loadgen.{json,md} (--out NAME to change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from lab.daemons import CLIENT_READY, SERVER_READY, camex_binary
from lab.loadgen import REFRESH, SpoofedLoad
from lab.netns import LabError, StarTopology, wait_until
from lab.traffic import iperf3

from . import procstat, report
from .tunnels import INNER_MTU, PSK

PORT = 7000
BATCH = 256  # REGISTERs sent back to back before a short pause
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _status(camex: str, sock: str, tries: int = 5) -> dict:
    """`camex status --json` of the server; a server busy with a burst of
    REGISTERs may miss the control socket's deadline, so try again."""
    import subprocess

    for attempt in range(tries):
        res = subprocess.run([camex, "status", "--json", "--control-socket", sock],
                             capture_output=True, text=True, timeout=60)
        if res.returncode == 0:
            return json.loads(res.stdout)[sock]
        time.sleep(0.5 * (attempt + 1))
    raise LabError(f"camex status failed {tries} times: {res.stdout}{res.stderr}".strip())


def _relay_run(lab, seconds: float) -> dict:
    r = iperf3(lab.clients[0], lab.clients[1], lab.clients[1].tunnel_ip, seconds=seconds)
    return {"gbps": round(r.gbps, 4), "retransmits": r.retransmits}


def run_mode(n: int, encrypt: bool, seconds: float, log) -> dict:
    camex = camex_binary()
    with StarTopology(clients=3) as lab:
        c1, c2, gen = lab.clients
        ctl = os.path.join(lab.rundir, "srv.sock")
        enc = ["-e", "-k", PSK] if encrypt else []
        srv = lab.server.spawn([camex, "-M", "server", "-p", PORT, "--control-socket", ctl,
                                "-f", "/dev/null", *enc], name="camex-server")
        srv.wait_for_line(SERVER_READY, timeout=15)
        for ns in (c1, c2):
            p = ns.spawn([camex, "-M", "client", "-s", ns.server_ip, "-p", PORT, "-l",
                          f"{ns.tunnel_ip}/24", "-t", INNER_MTU, "--control-socket",
                          os.path.join(lab.rundir, f"{ns.role}.sock"), *enc], name="camex-client")
            p.wait_for_line(CLIENT_READY, timeout=15)
        c1.wait_ping(c2.tunnel_ip, timeout=10)
        out = {"mode": "encrypted" if encrypt else "plaintext", "clients": n}
        out["rss_kib_2"] = procstat.rss_kib(srv.pid)
        out["relay_2"] = _relay_run(lab, seconds)
        out["rss_kib_2_after_iperf"] = procstat.rss_kib(srv.pid)
        log(f"{out['mode']}: 2 clients: server RSS {out['rss_kib_2'] / 1024:.1f} MiB, "
            f"relay {out['relay_2']['gbps']:.3f} Gbit/s")

        gen_clients = SpoofedLoad(gen, (gen.server_ip, PORT), n, src=gen.underlay,
                                  passphrase=PSK.encode() if encrypt else None)
        try:
            cpu0, t0 = procstat.cpu_seconds(srv.pid), time.monotonic()
            gen_clients.register_all(batch=BATCH)
            # Fill in whatever the server's queue dropped, until all are in.
            def count():
                return len(_status(camex, ctl)["clients"])

            def all_in():
                have = {c["endpoint"] for c in _status(camex, ctl)["clients"]}
                missing = [c for c in gen_clients.clients
                           if gen_clients.endpoint(c) not in have]
                if missing:
                    gen_clients.register_all(missing, batch=BATCH)
                return not missing

            wait_until(all_in, 120, f"{n} registered clients", interval=1.0)
            out["register_s"] = round(time.monotonic() - t0, 2)
            out["register_cpu_s"] = round(procstat.cpu_seconds(srv.pid) - cpu0, 2)
            out["registered"] = count() - 2
            out["registers_sent"] = gen_clients.sent
            time.sleep(1.0)
            out["rss_kib_n"] = procstat.rss_kib(srv.pid)
            gen_clients.start_refresh()
            out["relay_n"] = _relay_run(lab, seconds)
            out["rss_kib_n_after_iperf"] = procstat.rss_kib(srv.pid)
            out["peak_rss_kib"] = procstat.peak_rss_kib(srv.pid)
            out["registered_after"] = count() - 2
        finally:
            gen_clients.close()
        # Both readings after an iperf3 run through the relay, so that the
        # buffers a busy relay keeps count on both sides.
        out["kib_per_client"] = round(
            (out["rss_kib_n_after_iperf"] - out["rss_kib_2_after_iperf"]) / n, 3)
        out["relay_ratio"] = round(out["relay_n"]["gbps"] / out["relay_2"]["gbps"], 3) \
            if out["relay_2"]["gbps"] else None
        log(f"{out['mode']}: {n} clients registered in {out['register_s']} s "
            f"(server CPU {out['register_cpu_s']} s): RSS {out['rss_kib_n_after_iperf'] / 1024:.1f} MiB, "
            f"{out['kib_per_client']:.2f} KiB per client; relay {out['relay_n']['gbps']:.3f} "
            f"Gbit/s ({out['relay_ratio']} x the 2-client figure)")
        return out


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        "# camex server with many registered clients (bench/load.py)",
        "",
        f"Run {doc['started']}: `{doc['command']}`. Machine: {m['cores']} cores ({m['cpu']}), "
        f"kernel {m['kernel']}, Python {m['python']}, camex at {m['camex_commit']}.",
        "",
        "| mode | clients | registered (after the relay run) | server RSS, 2 clients MiB | "
        "server RSS, N clients MiB | KiB per client | relay TCP Gbit/s, 2 clients | "
        "relay TCP Gbit/s, N clients | ratio | time to register all s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        if "error" in r:
            lines.append(f"| {r['mode']} | {r['clients']} | failed: {r['error']} |" + " |" * 7)
            continue
        lines.append(
            f"| {r['mode']} | {r['clients']} | {r['registered']} ({r['registered_after']}) | "
            f"{r['rss_kib_2_after_iperf'] / 1024:.1f} | {r['rss_kib_n_after_iperf'] / 1024:.1f} | "
            f"{r['kib_per_client']:.2f} | "
            f"{r['relay_2']['gbps']:.3f} | {r['relay_n']['gbps']:.3f} | {r['relay_ratio']} | "
            f"{r['register_s']} |")
    lines += [
        "",
        "KiB per client: (server VmRSS with N+2 clients - VmRSS with 2) / N, both read after "
        "an iperf3 run through the relay. Relay: iperf3 TCP one stream c1 -> srv -> c2 "
        f"({doc['seconds']:g} s); with N clients the generator keeps re-sending every "
        f"client's REGISTER (all of them every {REFRESH:g} s) during the run, as real "
        "legacy clients do. Goal: at most 4 KiB per client and the same relay "
        "speed as with two.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--mode", choices=("plain", "enc", "both"), default="both")
    ap.add_argument("--seconds", type=float, default=5.0, help="iperf3 run time")
    ap.add_argument("--out", default="loadgen")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("loadgen: needs root (network namespaces)", file=sys.stderr)
        return 1

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs = []
    for enc in {"plain": [False], "enc": [True], "both": [False, True]}[args.mode]:
        try:
            runs.append(run_mode(args.clients, enc, args.seconds, log))
        except Exception as e:
            log(f"{'encrypted' if enc else 'plaintext'}: failed: {e}")
            runs.append({"mode": "encrypted" if enc else "plaintext", "clients": args.clients,
                         "error": str(e).splitlines()[0][:200]})
    doc = {"started": started, "command": "python -m bench.load " + " ".join(
        argv if argv is not None else sys.argv[1:]), "seconds": args.seconds,
           "machine": report.machine_info(), "runs": runs}
    os.makedirs(RESULTS_DIR, exist_ok=True)
    base = os.path.join(RESULTS_DIR, args.out)
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(doc))
    print(markdown(doc))
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

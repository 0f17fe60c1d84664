"""cxserver against camex's server, side by side in one run: server CPU per
relayed legacy encrypted datagram for a small camera fleet.

    python -m bench.cserver.compare [--clients 10] [--rate 20000] [--seconds 5] [--rounds 2]

A star lab (lab.netns.StarTopology): N emulated C clients in c1, each with
its own UDP socket, sender prefix and counter from 0, send encrypted DATA
(a 1,200-byte inner IPv4/UDP packet, one per datagram, round robin, paced
to --rate datagrams/s in all) through the server in srv to one receiving
client in c2. Each round starts a fresh server of each kind in turn
(rounds interleave the kinds, so a change of the machine's load hits them
alike):

- ``cxserver``: the C model as the deployed server runs, a log line per
  relayed packet (flaw 8);
- ``cxserver-quiet``: the same with --log-level warning (no line per
  packet), the cost of the C server's relay alone;
  (both with camex's 4 MiB socket buffers, --socket-buffer)
- ``camex``: ``camex -M server -e -k ...``.

Per server: utime+stime of its process (/proc/PID/stat) over the send
period plus a short drain, divided by the datagrams the receiver got; the
loss; the generator's own CPU; and the cores other tenants kept busy
meanwhile (the machine is shared: only ratios within one run mean much).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
from typing import Optional

from bench import cserver
from bench.procstat import cpu_seconds, machine_busy_seconds, own_cpu_seconds, rss_kib
from camex.legacy import codec
from lab.attacks import Sealer, udp_packet
from lab.daemons import Camex
from lab.netns import PORT, StarTopology, wait_until

PSK = "fleet-bench-secret"
RECEIVER_IP = "10.0.0.3"
KINDS = ("cxserver", "cxserver-quiet", "camex")


def sender_ip(i: int) -> str:
    """Tunnel address of sender ``i``: 10.0.0.11 up."""
    return f"10.0.{(10 + i) // 250}.{(10 + i) % 250 + 1}"


class Fleet:
    """N senders in ``src_ns`` and one receiver in ``dst_ns``, all legacy
    encrypted manual clients of the server at ``server``."""

    def __init__(self, lab: StarTopology, n: int, size: int):
        self.lab = lab
        self.key_sealer = Sealer(PSK.encode())
        aead = self.key_sealer.aead
        self.aead = aead
        src, dst = lab.c1, lab.c2
        self.senders = []
        for i in range(n):
            s = src.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((src.server_ip, PORT))
            s.setblocking(False)
            inner = udp_packet(sender_ip(i), 40000 + i, RECEIVER_IP, 9, bytes(size - 28))
            self.senders.append((s, Sealer(PSK.encode(), aead=aead), sender_ip(i), inner))
        self.rx = dst.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx.connect((dst.server_ip, PORT))
        self.rx_sealer = Sealer(PSK.encode(), aead=aead)
        self.received = 0
        self.bad = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def register(self) -> None:
        self.rx.send(self.rx_sealer.seal(codec.T_REGISTER, codec.register_manual(RECEIVER_IP)))
        for s, sealer, ip, _ in self.senders:
            s.send(sealer.seal(codec.T_REGISTER, codec.register_manual(ip)))

    def _receive(self) -> None:
        self.rx.settimeout(0.2)
        n = 0
        while not self._stop.is_set():
            try:
                d = self.rx.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                continue
            n += 1
            # Check one datagram in 1000 end to end (the receiver's CPU is
            # the generator's, not the server's, but keep it light).
            if n % 1000 == 1:
                try:
                    _, pt = self.rx_sealer.open(d)
                    if pt[16:20] != socket.inet_aton(RECEIVER_IP):
                        self.bad += 1
                except Exception:  # noqa: BLE001 - counted
                    self.bad += 1
            self.received += 1

    def start_receiver(self) -> None:
        self._thread = threading.Thread(target=self._receive, name="receiver", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Every sender's DATA reaches the receiver (REGISTERs repeated
        until then, as a C client would)."""
        def check():
            before = self.received
            self.register()
            time.sleep(0.05)   # the REGISTERs land before the probes
            for s, sealer, _, inner in self.senders:
                s.send(sealer.seal(codec.T_DATA, inner))
            return wait_until(lambda: self.received - before >= len(self.senders) or None,
                              1.0, "probes", interval=0.02)
        wait_until(lambda: _quiet(check), timeout, "every sender relayed", interval=0.2)

    def send(self, rate: float, seconds: float) -> int:
        """Round robin over the senders at ``rate`` datagrams/s for
        ``seconds``; return how many were sent."""
        sent = 0
        t0 = time.perf_counter()
        n = len(self.senders)
        burst = max(1, int(rate / 1000))   # paced per millisecond
        while True:
            now = time.perf_counter() - t0
            if now >= seconds:
                return sent
            due = int(now * rate)
            if sent >= due:
                time.sleep(min(0.001, (sent + burst) / rate - now))
                continue
            for _ in range(min(burst, due - sent)):
                s, sealer, _, inner = self.senders[sent % n]
                try:
                    s.send(sealer.seal(codec.T_DATA, inner))
                except (BlockingIOError, ConnectionRefusedError):
                    pass
                sent += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        for s, *_ in self.senders:
            s.close()
        self.rx.close()


def _quiet(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - one try timed out: the next one
        return None


def start_server(lab: StarTopology, kind: str, camex: Camex):
    if kind == "camex":
        return camex.start_server(encrypt=True, psk=PSK)
    level = "warning" if kind == "cxserver-quiet" else None
    # camex's 4 MiB socket buffers: loss then says how fast a server is,
    # not how long a stall of a shared machine its buffer absorbs.
    proc = lab.server.spawn(cserver.argv(PORT, psk=PSK, log_level=level, config=os.devnull,
                                         socket_buffer=4 << 20), name=kind)
    proc.wait_for_line(cserver.READY, timeout=10)
    lab.server.wait_port(PORT, "udp")
    return proc


def measure(lab: StarTopology, camex: Camex, kind: str, n: int, size: int, rate: float,
            seconds: float) -> dict:
    proc = start_server(lab, kind, camex)
    fleet = Fleet(lab, n, size)
    try:
        fleet.start_receiver()
        fleet.wait_ready()
        time.sleep(0.2)
        got0 = fleet.received
        cpu0, own0, busy0 = cpu_seconds(proc.pid), own_cpu_seconds(), machine_busy_seconds()
        t0 = time.monotonic()
        sent = fleet.send(rate, seconds)
        # Drain: what is queued reaches the receiver.
        last = -1
        while fleet.received != last:
            last = fleet.received
            time.sleep(0.1)
        wall = time.monotonic() - t0
        cpu1, own1, busy1 = cpu_seconds(proc.pid), own_cpu_seconds(), machine_busy_seconds()
        relayed = fleet.received - got0
        server_cpu = cpu1 - cpu0
        own_cpu = own1 - own0
        other = max(0.0, (busy1 - busy0) - server_cpu - own_cpu) / wall
        return {
            "server": kind, "clients": n, "rate": rate, "seconds": seconds,
            "sent": sent, "relayed": relayed, "loss_pct": 100.0 * (sent - relayed) / sent,
            "bad": fleet.bad, "server_cpu_s": server_cpu,
            "us_per_datagram": 1e6 * server_cpu / relayed if relayed else None,
            "server_rss_kib": rss_kib(proc.pid), "generator_cores": own_cpu / wall,
            "other_cores": other, "loadavg": os.getloadavg()[0],
        }
    finally:
        fleet.close()
        proc.stop()


def summarize(runs: list[dict]) -> dict:
    out = {}
    for kind in KINDS:
        us = [r["us_per_datagram"] for r in runs if r["server"] == kind and r["us_per_datagram"]]
        if us:
            out[kind] = statistics.median(us)
    return out


def markdown(runs: list[dict], summary: dict, argv: list[str]) -> str:
    lines = ["# cxserver against camex: server CPU per relayed legacy encrypted datagram", "",
             f"`python -m bench.cserver.compare {' '.join(argv)}`", "",
             "| round | server | sent | relayed | loss % | server CPU µs/datagram | server RSS MiB "
             "| generator cores | other tenants' cores | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        us = f"{r['us_per_datagram']:.2f}" if r["us_per_datagram"] else "-"
        rss = f"{r['server_rss_kib'] / 1024:.1f}" if r["server_rss_kib"] else "-"
        lines.append(f"| {r['round']} | {r['server']} | {r['sent']} | {r['relayed']} | "
                     f"{r['loss_pct']:.2f} | {us} | {rss} | {r['generator_cores']:.2f} | "
                     f"{r['other_cores']:.2f} | {r['loadavg']:.2f} |")
    lines += ["", "Medians over the rounds (µs of server CPU per relayed datagram):", ""]
    for kind, us in summary.items():
        lines.append(f"- {kind}: {us:.2f}")
    if "camex" in summary and "cxserver" in summary:
        lines += ["", f"camex / cxserver: {summary['camex'] / summary['cxserver']:.2f}; "
                  f"camex / cxserver-quiet: {summary['camex'] / summary['cxserver-quiet']:.2f}"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rate", type=float, default=20000, help="datagrams/s, all senders together")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--size", type=int, default=1200, help="inner packet bytes")
    p.add_argument("--only", default=",".join(KINDS), help="servers, comma-separated")
    p.add_argument("--out", help="write OUT.md and OUT.json")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("compare: needs root (network namespaces)", file=sys.stderr)
        return 1
    kinds = [k for k in args.only.split(",") if k]
    cserver.build()
    runs = []
    with StarTopology(clients=2) as lab:
        camex = Camex(lab)
        for rnd in range(args.rounds):
            for kind in kinds:
                r = measure(lab, camex, kind, args.clients, args.size, args.rate, args.seconds)
                r["round"] = rnd + 1
                runs.append(r)
                print(f"round {rnd + 1} {kind}: {r['relayed']}/{r['sent']} relayed, "
                      f"{r['us_per_datagram'] or 0:.2f} µs/datagram, other tenants "
                      f"{r['other_cores']:.2f} cores", flush=True)
    summary = summarize(runs)
    text = markdown(runs, summary, argv)
    print(text)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(text)
        with open(args.out + ".json", "w") as f:
            json.dump({"argv": argv, "runs": runs, "median_us_per_datagram": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

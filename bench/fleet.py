"""`make bench-fleet`: a server under a camera fleet.

N clients that behave like the deployed C client (one UDP socket each,
legacy encrypted, REGISTER with a manual address, one inner packet per
datagram, no offloads) send a steady stream of 1,200-byte IPv4/UDP
packets through one server to one receiver, for N = 10, 100, 1,000; the
same with N camex v2 clients. Per server x receiver x N the bench finds
the highest aggregate rate relayed with under 0.1 % loss (steps of a few
seconds, the rate doubled until a step loses, then bisected; loss counted
exactly by the sequence numbers in the inner payloads), and reports the
server's CPU per relayed datagram (utime+stime of /proc/PID/stat over the
step), its resident memory (VmHWM, VmRSS), and the generator's own CPU per
datagram and offered/asked rate (the generator must not be the bottleneck).

Lab: StarTopology with two client namespaces: c1 holds the generator's N
sockets, c2 the receiving client; with receiver "tun" the server runs
--server-tun and a socket in its own namespace, bound to the gateway
address, counts what its TUN delivered.

Servers (SERVERS, one line each): camex (legacy clients), camex-v2 (v2
clients), naive-relay (bench/naive_relay.py: the floor), c-server (the
model of the deployed C server, bench/cserver: `build()` gives its binary,
which takes camex's server command line; the row says "not available"
until that module is there).

    python -m bench.fleet [--clients 10,100,1000] [--servers a,b] [--receivers client,tun]
                          [--step-seconds 3] [--out fleet]

Writes bench/results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from typing import Optional

from lab.daemons import SERVER_READY, camex_binary
from lab.netns import StarTopology, wait_until

from . import procstat, report
from .fleet_core import INNER_SIZE, KEEP_UP, MAX_LOSS, RateSearch, loss
from .fleet_workers import GATEWAY, NET, CClientReceiver, LegacyGenerator, TunReceiver, \
    V2Generator, V2Receiver, fleet_addresses, start_generator, start_receiver

PORT = 7000
PSK = "camex-fleet-passphrase"
TUN_NAME = "fleettun0"
START_RATE = 8000.0   # datagrams/s of every search's first step
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NotAvailable(Exception):
    pass


# ------------------------------------------------------------ servers


class FleetServer:
    """A server under test: how to start it, which clients it serves, and
    whether it can deliver to its own TUN."""

    clients = "legacy"
    tun = True
    label = ""

    def __init__(self, name: str):
        self.name = name

    def argv(self, conf: str, server_tun: bool) -> list:
        raise NotImplementedError

    def ready(self, lab, proc) -> None:
        lab.server.wait_port(PORT, timeout=20)

    def after_start(self, lab, proc, server_tun: bool) -> None:
        pass


class Camex(FleetServer):
    label = "camex server, legacy encrypted clients"

    def __init__(self, name: str, extra: tuple = (), clients: str = "legacy", label: str = ""):
        super().__init__(name)
        self.extra = extra
        self.clients = clients
        self.label = label or self.label

    def argv(self, conf, server_tun):
        return [camex_binary(), "-M", "server", "-p", PORT, "-f", conf, "-e", "-k", PSK,
                *self.extra,
                # The TUN holds the whole client network: with the /24 a TUN
                # gets by default, 10.64.0.255 would be its broadcast address.
                *(["--server-tun", "-l", f"{GATEWAY}/16"] if server_tun else [])]

    def ready(self, lab, proc):
        proc.wait_for_line(SERVER_READY, timeout=20)


class NaiveRelay(FleetServer):
    label = ("bench/naive_relay.py: recvfrom, open, lookup, seal, sendto per datagram "
             "(the floor)")

    def argv(self, conf, server_tun):
        return [sys.executable, "-m", "bench.naive_relay", PORT, PSK,
                *(["--tun", TUN_NAME, GATEWAY] if server_tun else [])]

    def ready(self, lab, proc):
        proc.wait_for_line("listening", timeout=20)

    def after_start(self, lab, proc, server_tun):
        if server_tun:
            wait_until(lambda: TUN_NAME in lab.server.links(), 10, "the naive relay's TUN")
            lab.server.add_address(TUN_NAME, f"{GATEWAY}/16")
            lab.server.link_up(TUN_NAME)


class CServer(FleetServer):
    """The model of the deployed legacy C server (bench/cserver: its
    `argv(port, psk=..., log_level=...)` builds the binary once and gives
    camex's server command line). It owns no TUN (docs/LEGACY.md §1), so it
    has no "tun" row. Started at log level warning: the deployed server
    writes a line per relayed packet, which would measure its log file."""

    label = "model of the deployed legacy C server (bench/cserver), log level warning"
    tun = False
    ready_line = None

    def __init__(self, name: str, socket_buffer: Optional[int] = None):
        super().__init__(name)
        self.socket_buffer = socket_buffer
        if socket_buffer:
            self.label += f", socket buffers {socket_buffer >> 20} MiB as camex's"

    def argv(self, conf, server_tun):
        try:
            from . import cserver  # type: ignore[attr-defined]
        except ImportError as e:
            raise NotAvailable(f"bench/cserver is not there yet ({e})") from None
        self.ready_line = getattr(cserver, "READY", None)
        try:
            if self.socket_buffer:
                return cserver.argv(PORT, psk=PSK, log_level="warning",
                                    socket_buffer=self.socket_buffer)
            if hasattr(cserver, "argv"):
                return cserver.argv(PORT, psk=PSK, log_level="warning")
            return [cserver.build(), "-M", "server", "-p", PORT, "-e", "-k", PSK]
        except Exception as e:  # noqa: BLE001 - its BuildError says what is missing
            raise NotAvailable(f"bench/cserver: {str(e).splitlines()[0][:200]}") from None

    def ready(self, lab, proc):
        if self.ready_line:
            proc.wait_for_line(self.ready_line, timeout=20)
        else:
            super().ready(lab, proc)


SERVERS = [
    Camex("camex"),
    Camex("camex-v2", ("--protocol", "v2"), clients="v2",
          label="camex server, v2 clients (--protocol v2)"),
    NaiveRelay("naive-relay"),
    # As deployed: the kernel's default socket buffers (~208 KiB, about 90
    # datagrams: a server descheduled for ~10 ms at 10 k/s loses), and with
    # camex's 4 MiB (the naive relay has them too): the CPU comparison.
    CServer("c-server"),
    CServer("c-server-4m", socket_buffer=4 << 20),
]
BY_NAME = {s.name: s for s in SERVERS}
RECEIVERS = ("client", "tun")


# ------------------------------------------------------------ one run


def _udp_errors(ns) -> int:
    s = ns.snmp()
    return s.get("Udp.RcvbufErrors", 0)


def _wait_received(rx, step: int, settle: float = 0.3, limit: float = 3.0) -> dict:
    """The receiver's count once it stopped growing for ``settle`` seconds
    (datagrams still queued in the server drain meanwhile)."""
    t_end = time.monotonic() + limit
    last = rx.call("count", step)
    while time.monotonic() < t_end:
        time.sleep(settle)
        now = rx.call("count", step)
        if now["received"] == last["received"]:
            return now
        last = now
    return last


def run_one(server: FleetServer, receiver: str, n: int, step_seconds: float, log,
            max_steps: int = 10, start_rate: float = START_RATE) -> dict:
    out = {"server": server.name, "receiver": receiver, "clients": n,
           "client_kind": server.clients, "status": "ok",
           "load_before": [round(x, 2) for x in os.getloadavg()]}
    if receiver == "tun" and not server.tun:
        out.update(status="n/a", note=f"{server.name} owns no TUN")
        return out
    with StarTopology(clients=2) as lab:
        gen_ns, rx_ns = lab.clients
        server_addr = (gen_ns.server_ip, PORT)
        conf = os.path.join(lab.logdir, "fleet.conf")
        with open(conf, "w") as f:
            f.write(f"# camex fleet bench: the server TUN's address\n[defaults]\n"
                    f"gateway_ip={GATEWAY}\nclient_cidr={NET}\nmtu=1420\n")
        try:
            argv = server.argv(conf, receiver == "tun")
        except NotAvailable as e:
            out.update(status="not available", note=str(e))
            return out
        srv = lab.server.spawn(argv, name=server.name, env={"PYTHONPATH": ROOT})
        server.ready(lab, srv)
        server.after_start(lab, srv, receiver == "tun")
        out["server_cmd"] = " ".join(os.path.basename(a) if i == 0 else a
                                     for i, a in enumerate(srv.argv))
        addrs, rx_addr = fleet_addresses(n)
        psk = PSK.encode()
        if receiver == "tun":
            rx_target = GATEWAY
            make_rx = lambda: TunReceiver(lab.server)  # noqa: E731
        elif server.clients == "v2":
            rx_target = rx_addr
            make_rx = lambda: V2Receiver(rx_ns, (rx_ns.server_ip, PORT), psk, n,  # noqa: E731
                                         rx_ns.underlay)
        else:
            rx_target = rx_addr
            make_rx = lambda: CClientReceiver(rx_ns, (rx_ns.server_ip, PORT), psk,  # noqa: E731
                                              rx_addr, rx_ns.underlay)
        gen_cls = V2Generator if server.clients == "v2" else LegacyGenerator
        rx = start_receiver(make_rx)
        gen = None
        try:
            t0 = time.monotonic()
            gen = start_generator(lambda: gen_cls(gen_ns, server_addr, n, psk, rx_target,
                                                  gen_ns.underlay))
            out["registered"] = gen.ready
            out["register_s"] = round(time.monotonic() - t0, 2)
            out["generator_pid"], out["receiver_pid"] = gen.pid, rx.pid
            time.sleep(0.3)   # the server digests the REGISTERs
            search = RateSearch(start=start_rate, max_steps=max_steps)
            step_id = 0
            # A first short step at a low rate proves the path (every client
            # registered, the receiver reached) before the search.
            probe = _step(lab, srv, gen, rx, n, 0, min(2000.0, 50.0 * n), 0.5, receiver)
            out["probe"] = probe
            if loss(probe["offered"], probe["received"]) >= MAX_LOSS:
                raise RuntimeError(
                    f"probe at {probe['asked']:.0f}/s: {probe['received']} of "
                    f"{probe['offered']} arrived; nothing from clients "
                    f"{', '.join(addrs[i] for i in probe['silent_clients'][:8])} "
                    "(registration refused or path broken)")
            while (rate := search.next_rate()) is not None:
                step_id += 1
                st = _step(lab, srv, gen, rx, n, step_id, rate, step_seconds, receiver)
                st.pop("asked")
                rec = search.record(rate, st.pop("offered"), st.pop("received"),
                                    st.pop("seconds"), **st)
                log(f"  {server.name} {receiver} N={n}: asked {rate / 1e3:.1f}k/s, achieved "
                    f"{rec['achieved'] / 1e3:.1f}k, loss {rec['loss'] * 100:.3f} %, server "
                    f"{_f(rec.get('server_cpu_us'))} µs/dgram, gen {_f(rec.get('gen_cpu_us'))} "
                    f"µs/dgram{' PASS' if rec['passed'] else ''}")
            out.update(search.result())
            out["peak_rss_kib"] = procstat.peak_rss_kib(srv.pid)
            out["rss_kib"] = procstat.rss_kib(srv.pid)
            out["server_alive"] = srv.running()
        except Exception as e:  # noqa: BLE001 - one failed row must not stop the bench
            lab.keep_logs = True
            out.update(status="failed", note=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                       logs=lab.logdir)
            log(f"  {server.name} {receiver} N={n}: failed: {e}")
            log(srv.tail(10))
        finally:
            if gen is not None:
                gen.close()
            rx.close()
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _f(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _step(lab, srv, gen, rx, n: int, step_id: int, rate: float, seconds: float,
          receiver: str) -> dict:
    gen.call("idle")
    sealed = gen.call("seal", step_id, rate, seconds, timeout=600)
    rx.call("expect", step_id, sealed["total"])
    rx_ns = lab.server if receiver == "tun" else lab.clients[1]
    srv_err0, rx_err0 = _udp_errors(lab.server), _udp_errors(rx_ns)
    before = rx.call("count", step_id)
    cpu0 = procstat.cpu_times(srv.pid)
    sent = gen.call("send", rate, timeout=seconds * 20 + 60)
    got = _wait_received(rx, step_id)
    cpu1 = procstat.cpu_times(srv.pid)
    # The probe (step 0) names the clients none of whose datagrams arrived.
    silent = rx.call("silent", step_id, n) if step_id == 0 else None
    rx.call("forget", step_id)
    srv_err, rx_err = _udp_errors(lab.server) - srv_err0, _udp_errors(rx_ns) - rx_err0
    relayed = got["received"]
    out = {"offered": sent["sent"], "received": relayed, "seconds": sent["seconds"],
           "asked": rate, "refused": sent["refused"],
           "server_cpu_s": None if cpu0 is None or cpu1 is None
           else round(sum(cpu1) - sum(cpu0), 3),
           # The kernel's part (stime): the sockets' work on the server's
           # behalf, which no user-space change of the relay removes.
           "server_sys_s": None if cpu0 is None or cpu1 is None
           else round(cpu1[1] - cpu0[1], 3),
           "gen_cpu_us": sent["cpu_us"], "gen_seal_us": sealed["seal_cpu_us"],
           "receiver_cpu_us": round((got["cpu_s"] - before["cpu_s"]) / relayed * 1e6, 2)
           if relayed else None,
           "server_rss_kib": procstat.rss_kib(srv.pid),
           "udp_rcvbuf_errors_server_ns": srv_err,
           "replay_dropped": got["replay_dropped"] - before["replay_dropped"]}
    if receiver != "tun":
        out["udp_rcvbuf_errors_receiver_ns"] = rx_err
    if silent is not None:
        out["silent_clients"] = silent
    if out["server_cpu_s"] is not None and relayed:
        out["server_cpu_us"] = round(out["server_cpu_s"] / relayed * 1e6, 2)
        out["server_sys_us"] = round(out["server_sys_s"] / relayed * 1e6, 2)
    return out


# ------------------------------------------------------------ report


# ------------------------------------------------------------ main


def run(clients: list, servers: list, receivers: list, step_seconds: float, log,
        max_steps: int = 10, start_rate: float = START_RATE) -> list:
    runs = []
    for n in clients:
        for name in servers:
            for recv in receivers:
                log(f"{name} -> {recv}, N={n} (load {os.getloadavg()[0]:.2f})")
                try:
                    r = run_one(BY_NAME[name], recv, n, step_seconds, log, max_steps=max_steps,
                                start_rate=start_rate)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    r = {"server": name, "receiver": recv, "clients": n, "status": "failed",
                         "note": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                if r["status"] == "ok":
                    b = r["steps"][r["best_step"]] if r.get("best_step") is not None else {}
                    log(f"{name} -> {recv}, N={n}: max loss-free "
                        f"{(b.get('achieved') or 0) / 1e3:.1f} kdgram/s, server "
                        f"{_f(b.get('server_cpu_us'))} µs/dgram, RSS "
                        f"{(r.get('peak_rss_kib') or 0) / 1024:.1f} MiB")
                else:
                    log(f"{name} -> {recv}, N={n}: {r['status']}: {r.get('note', '')}")
                runs.append(r)
    return runs


def document(runs: list, command: str, started, minutes: float, step_seconds: float,
             start_rate: float = START_RATE) -> dict:
    return {"started": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "minutes": round(minutes, 1),
            "command": command, "machine": report.machine_info(),
            "settings": {"inner_size": INNER_SIZE, "step_seconds": step_seconds,
                         "max_loss": MAX_LOSS, "keep_up": KEEP_UP, "net": NET,
                         "start_rate": start_rate},
            "runs": runs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fleet",
                                 description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="10,100,1000", help="N values (default 10,100,1000)")
    ap.add_argument("--servers", default=",".join(BY_NAME),
                    help=f"servers under test (default all: {', '.join(BY_NAME)})")
    ap.add_argument("--receivers", default=",".join(RECEIVERS),
                    help="client (a receiving client), tun (the server's own TUN, "
                         "--server-tun); default both")
    ap.add_argument("--step-seconds", type=float, default=3.0, help="seconds per rate step")
    ap.add_argument("--max-steps", type=int, default=10, help="rate steps per search")
    ap.add_argument("--out", default="fleet", help="results name under bench/results, or a path")
    args = ap.parse_args(argv)
    clients = [int(x) for x in args.clients.split(",") if x.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    receivers = [r.strip() for r in args.receivers.split(",") if r.strip()]
    bad = [s for s in servers if s not in BY_NAME] + [r for r in receivers if r not in RECEIVERS]
    if bad:
        ap.error(f"unknown: {', '.join(bad)} (servers: {', '.join(BY_NAME)}; receivers: "
                 f"{', '.join(RECEIVERS)})")
    if os.geteuid() != 0:
        print("bench.fleet: needs root (network namespaces)", file=sys.stderr)
        return 1
    from .run import byte_compile_camex

    byte_compile_camex()

    def log(msg):
        print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", flush=True)

    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    runs = run(clients, servers, receivers, args.step_seconds, log, args.max_steps)
    cmd = "python -m bench.fleet " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = document(runs, cmd, started, (time.monotonic() - t0) / 60, args.step_seconds)
    write(doc, args.out)
    if args.out == "fleet":
        report.update_readme_fleet(doc, os.path.join(os.path.dirname(RESULTS_DIR), "README.md"))
    print(report.fleet_section(doc))
    return 0 if all(r["status"] in ("ok", "n/a", "not available") for r in runs) else 1


def write(doc: dict, out: str) -> str:
    base = out if os.sep in out else os.path.join(RESULTS_DIR, out)
    os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(report.fleet_markdown(doc))
    return base


if __name__ == "__main__":
    sys.exit(main())

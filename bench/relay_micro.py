"""Server CPU per relayed legacy encrypted datagram, a camera fleet's way.

    python -m bench.relay_micro [--clients 10,1000] [--relays camex,naive]
        [--baseline DIR] [--cserver BINARY] [--fixed-rate 30000] [--rounds 5]
        [--step 1.5] [--json FILE] [-v] [--profile SECONDS]

A measurement tool for the server's relay path (not the fleet benchmark):
in a two-namespace lab (lab.netns.PointToPoint) per relay, N emulated C
clients in namespace b, each with its own UDP socket, sender prefix and
counter, send encrypted 1,200-byte DATA (one inner IPv4 packet per
datagram, round robin over the clients, paced in 1 ms ticks) through the
relay in namespace a to one receiving client (another socket in b,
registered like the others, counting in a child process). Every relay is
up at once; per N:

- server CPU (utime+stime of /proc/PID/stat) per datagram the receiver
  got, at a fixed offered rate (`--fixed-rate`, the same for every relay),
  `--rounds` samples taken in turn over the relays (a neighbour's burst
  hits them alike): the median and the least;
- the highest offered rate (a ladder from `--start-rate`, x1.2 a step) at
  which the receiver got at least 99.9 % (a lossy step is tried once
  more), with the CPU per datagram there, and where losses were (receive
  buffer overflows of the relay's socket or the receiver's);
- past the limit (`--saturate`, offered 120,000/s): datagrams relayed per
  second and the CPU per relayed datagram, where batches are fullest;
- the generator's own CPU per datagram and the rate it achieved (it must
  keep up: a step whose sent rate is under 95 % of the offered one fails).

Relays: `camex` (`camex -M server -e -k ...`, both protocols, as a user
runs it; this checkout's), `camex-base` (the same command from another
checkout, `--baseline DIR`: before and after a change in one run),
`naive` (this file's naive_relay(): recvfrom, open, look up the inner
destination, seal, sendto; the floor a Python relay reaches) and
`cxserver` (a C model of the deployed server, `--cserver BINARY`).
Only ratios within one run mean anything on a shared machine: the load
average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import time

from camex.legacy import codec

PORT = 7000
PSK = b"relay-micro-passphrase"
SIZE = 1200          # inner IPv4 packet bytes (a video-like stream's packets)
NET = "10.64"        # tunnel addresses 10.64.x.y; the receiver is 10.64.0.2
LOSS_FREE = 0.999


def tunnel_ip(i: int) -> str:
    """Client i's tunnel address (i = 0 is the receiver): 10.64.0.2 up."""
    n = i + 2
    return f"{NET}.{n >> 8}.{n & 255}"


def inner(src: str, dst: str, size: int = SIZE) -> bytes:
    """An IPv4/UDP packet of `size` bytes (checksums are the receiver's
    business; the server checks only version, source and destination)."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0x4000, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + struct.pack("!HHHH", 40000, 9, size - 20, 0) + bytes(size - 28)


# ------------------------------------------------------------- naive relay


def naive_relay(port: int, psk: bytes) -> None:
    """The floor: per datagram recvfrom, open, look up, seal, sendto.

    It learns manual REGISTERs (tunnel address -> endpoint) and relays
    DATA between registered clients; no replay window, no address policy,
    no source check (what camex keeps and this does not)."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    aead = ChaCha20Poly1305(codec.derive_key(psk))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("0.0.0.0", port))
    hdr_s = codec.HEADER
    prefix = os.urandom(4)
    seq = 0
    routes: dict = {}
    recvfrom, sendto, decrypt, encrypt = sock.recvfrom, sock.sendto, aead.decrypt, aead.encrypt
    print("listening", flush=True)
    while True:
        data, addr = recvfrom(65535)
        try:
            _m, ptype, npre, nseq, length, _s = hdr_s.unpack_from(data)
            plain = decrypt(npre + nseq.to_bytes(8, "big"), data[27:], data[:27])
        except Exception:  # noqa: BLE001 - junk is dropped
            continue
        if ptype == codec.T_DATA:
            dst = routes.get(plain[16:20])
            if dst is not None:
                h = hdr_s.pack(codec.MAGIC, 2, prefix, seq, len(plain), seq)
                sendto(h + encrypt(prefix + seq.to_bytes(8, "big"), plain, h), dst)
                seq += 1
        elif ptype == codec.T_REGISTER:
            ip = codec.parse_control(plain).get("LOCAL_IP")
            if ip:
                routes[socket.inet_aton(ip)] = addr


# ------------------------------------------------------------------ driver


class Receiver:
    """The receiving client: a forked child reading its socket and
    counting DATA datagrams in a shared page (no decryption: the count is
    what matters, and the generator must not be the bottleneck)."""

    def __init__(self, sock: socket.socket):
        self.page = mmap.mmap(-1, 8)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                self._child(sock)
            finally:
                os._exit(0)

    def _child(self, sock: socket.socket) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sock.setblocking(True)
        buf = bytearray(65535)
        recv_into, page, pack = sock.recv_into, self.page, struct.pack_into
        n = 0
        while True:
            try:
                size = recv_into(buf)
            except ConnectionRefusedError:
                continue
            if size == SIZE + codec.OVERHEAD_ENC and buf[4] == codec.T_DATA:
                n += 1
                pack("Q", page, 0, n)

    @property
    def count(self) -> int:
        return struct.unpack_from("Q", self.page, 0)[0]

    def settle(self, quiet: float = 0.15, limit: float = 3.0) -> int:
        """The count once it stopped moving for `quiet` seconds."""
        last, t_last = self.count, time.monotonic()
        deadline = t_last + limit
        while time.monotonic() < deadline:
            time.sleep(0.02)
            c = self.count
            if c != last:
                last, t_last = c, time.monotonic()
            elif time.monotonic() - t_last >= quiet:
                break
        return last

    def close(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)


class Fleet:
    """N sending clients and one receiver in namespace `ns`."""

    def __init__(self, ns, server_ip: str, n: int):
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
        from lab.loadgen import raise_fd_limit

        raise_fd_limit(n + 256)
        self.server = (server_ip, PORT)
        self.aead = ChaCha20Poly1305(codec.derive_key(PSK))
        self.socks = []
        for _ in range(n + 1):
            s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.bind((ns.underlay, 0))
            self.socks.append(s)
        self.prefixes = [os.urandom(4) for _ in self.socks]
        self.seqs = [0] * len(self.socks)
        self.packets = [inner(tunnel_ip(i), tunnel_ip(0)) for i in range(len(self.socks))]
        self.receiver = None

    def seal(self, i: int, ptype: int, payload: bytes) -> bytes:
        seq = self.seqs[i]
        self.seqs[i] = seq + 1
        return codec.seal(self.aead, ptype, self.prefixes[i], seq, payload)

    def register(self) -> None:
        for i, s in enumerate(self.socks):
            s.sendto(self.seal(i, codec.T_REGISTER, codec.register_manual(tunnel_ip(i))),
                     self.server)
            if i % 50 == 49:
                time.sleep(0.005)
        # The receiver drains its socket from now on (the REGISTERs have no answer).
        self.receiver = Receiver(self.socks[0])

    def ready(self, timeout: float = 20.0) -> None:
        """Every sender relays: one DATA each reaches the receiver (retried)."""
        deadline = time.monotonic() + timeout
        while True:
            before = self.receiver.count
            self.step(len(self.socks) - 1, 0.2 + len(self.socks) / 20000)
            got = self.receiver.settle() - before
            if got >= len(self.socks) - 1:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {got} of {len(self.socks) - 1} senders relayed")
            self.register_again()

    def register_again(self) -> None:
        for i, s in enumerate(self.socks):
            s.sendto(self.seal(i, codec.T_REGISTER, codec.register_manual(tunnel_ip(i))),
                     self.server)

    def step(self, total: int, seconds: float) -> dict:
        """Send `total` DATA over `seconds`, round robin over the senders,
        paced in 1 ms ticks. Sealed beforehand: the pacing loop only sends."""
        n = len(self.socks) - 1
        work = []
        for k in range(total):
            i = 1 + k % n
            work.append((self.socks[i].sendto, self.seal(i, codec.T_DATA, self.packets[i])))
        server = self.server
        t_cpu = time.thread_time()
        t0 = time.monotonic()
        sent = 0
        while sent < total:
            due = min(total, int((time.monotonic() - t0) / seconds * total) + 1)
            while sent < due:
                send, d = work[sent]
                try:
                    send(d, server)
                except (BlockingIOError, ConnectionRefusedError):
                    pass
                sent += 1
            time.sleep(0.001)
        elapsed = time.monotonic() - t0
        return {"sent": total, "elapsed": elapsed, "gen_cpu": time.thread_time() - t_cpu}

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.close()
        for s in self.socks:
            s.close()


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple:
    """(utime, stime) of the relay: its own code, and the kernel's work on
    its behalf (its sockets' receives and sends, wake-ups)."""
    from bench.procstat import cpu_times
    v = cpu_times(pid)
    if v is None:
        raise RuntimeError("the relay exited")
    return v


def _rcvbuf_errors(ns) -> int:
    return ns.snmp().get("Udp.RcvbufErrors", 0)


def measure_rate(fleet: Fleet, pid: int, rate: float, seconds: float, lab) -> dict:
    total = int(rate * seconds)
    got0 = fleet.receiver.settle()
    e0 = _rcvbuf_errors(lab.a), _rcvbuf_errors(lab.b)
    u0, s0 = cpu_split(pid)
    st = fleet.step(total, seconds)
    got = fleet.receiver.settle() - got0
    u1, s1 = cpu_split(pid)
    cpu = u1 + s1 - u0 - s0
    # Where datagrams were lost: a full receive buffer at the relay's
    # socket (a) or at the receiving client's (b).
    e1 = _rcvbuf_errors(lab.a), _rcvbuf_errors(lab.b)
    return {"rate": rate, "sent_rate": round(total / st["elapsed"]), "received": got,
            "delivered": round(got / total, 5),
            "cpu_us": round(cpu / max(got, 1) * 1e6, 2),
            "sys_us": round((s1 - s0) / max(got, 1) * 1e6, 2),
            "gen_cpu_us": round(st["gen_cpu"] / total * 1e6, 2),
            "lost_at_relay": e1[0] - e0[0], "lost_at_receiver": e1[1] - e0[1]}


def profile(fleet: Fleet, pid: int, relay: str, n: int, args, lab) -> dict:
    """py-spy (self and inclusive shares of the busy samples, as
    bench/profile.py) while the fleet sends at --fixed-rate."""
    from bench.profile import py_spy, summarise

    raw = f"/tmp/relay-micro-{relay}-{n}.raw"
    sp = subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--duration",
                           str(int(args.profile)), "--rate", "1000", "--idle", "--format",
                           "raw", "--nonblocking", "--output", raw],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = measure_rate(fleet, pid, args.fixed_rate, args.profile - 1, lab)
    sp.wait(timeout=args.profile + 30)
    s = summarise(raw, top=25)
    print(f"{relay} N={n}: {r}; waiting {s['idle_share']:.0%}")
    for title in ("self", "inclusive"):
        print(f"  {title}:")
        for fr, share in s[title]:
            print(f"    {share:6.1%}  {fr}")
    return {"relay": relay, "clients": n, "profiled": r}


def start(relay: str, n: int, args, stack):
    """A lab of its own with `relay` in namespace a and N clients plus the
    receiver in b, registered and relaying: (lab, relay process, fleet)."""
    import tempfile

    from lab.netns import PointToPoint

    lab = stack.enter_context(PointToPoint())
    state = stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-micro-"))
    if relay.startswith("camex"):
        # camex-base: another checkout's camex (--baseline), e.g. the
        # commit before a change, before and after in one run. Its
        # directory goes first on sys.path (PYTHONPATH would lose to the
        # working directory and to the venv's editable install).
        root = args.baseline if relay == "camex-base" else \
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        argv = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "import camex; assert camex.__file__.startswith(sys.path[0]); "
                "from camex.cli import main; sys.exit(main())", os.path.abspath(root),
                "-M", "server", "-p", str(PORT), "-e", "-k", PSK.decode(), "-f", "/dev/null",
                "--state-dir", state, "--control-socket", os.path.join(state, "ctl.sock")]
    elif relay == "cxserver":
        # A C model of the deployed server (--cserver BINARY), without
        # its log line per packet and with camex's socket buffers.
        argv = [args.cserver, "-M", "server", "-p", str(PORT), "-e", "-k", PSK.decode(),
                "--log-level", "warning", "--socket-buffer", str(4 << 20)]
    else:
        argv = [sys.executable, "-m", "bench.relay_micro", "naive-relay", "--port", str(PORT)]
    proc = lab.a.spawn(argv, name=relay)
    lab.a.wait_port(PORT, "udp", timeout=20)
    fleet = Fleet(lab.b, lab.a.underlay, n)
    stack.callback(fleet.close)
    fleet.register()
    fleet.ready()
    return lab, proc, fleet


def run_n(n: int, relays: list, args) -> list:
    """Every relay up at once, each in its own lab; `--rounds` fixed-rate
    samples taken in turn (relay 1, 2, ..., 1, 2, ...: a neighbour's burst
    hits them alike), then each relay's loss-free ladder."""
    from contextlib import ExitStack

    from bench.procstat import peak_rss_kib
    from lab.loadgen import raise_fd_limit

    raise_fd_limit(len(relays) * (n + 1) + 256)
    out = []
    with ExitStack() as stack:
        ups = {}
        for relay in relays:
            try:
                ups[relay] = start(relay, n, args, stack)
            except RuntimeError as e:   # e.g. cxserver keeps 256 clients at most
                out.append({"relay": relay, "clients": n, "error": str(e)})
        if args.profile:
            return [profile(fleet, proc.pid, relay, n, args, lab)
                    for relay, (lab, proc, fleet) in ups.items()]
        samples: dict = {relay: [] for relay in ups}
        for _ in range(args.rounds):
            for relay, (lab, proc, fleet) in ups.items():
                samples[relay].append(measure_rate(fleet, proc.pid, args.fixed_rate,
                                                   args.step, lab))
        for relay, (lab, proc, fleet) in ups.items():
            rate, best, tries = args.start_rate, None, 0
            while rate <= args.max_rate:
                r = measure_rate(fleet, proc.pid, rate, args.step, lab)
                if args.verbose:
                    print("   ", relay, n, r, flush=True)
                if r["delivered"] >= LOSS_FREE and r["sent_rate"] >= 0.95 * rate:
                    best, tries = r, 0
                    rate *= 1.2
                elif tries == 0:
                    tries = 1   # once more at this rate: a neighbour's burst
                else:
                    break
            # Past its limit: what one core relays flat out, and at what CPU
            # per relayed datagram (batches are fullest there).
            sat = measure_rate(fleet, proc.pid, args.saturate, args.step, lab) \
                if args.saturate else None
            if args.verbose:
                print("   ", relay, n, "saturated", sat, flush=True)
            cpu = sorted(x["cpu_us"] for x in samples[relay])
            sys_us = sorted(x["sys_us"] for x in samples[relay])
            out.append({"relay": relay, "clients": n, "fixed_samples": samples[relay],
                        "fixed_cpu_us_median": cpu[len(cpu) // 2], "fixed_cpu_us_min": cpu[0],
                        "fixed_sys_us_median": sys_us[len(sys_us) // 2],
                        "fixed_delivered_min": min(x["delivered"] for x in samples[relay]),
                        "max": best, "saturated": sat,
                        "peak_rss_kib": peak_rss_kib(proc.pid)})
    return out


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "naive-relay":
        ap = argparse.ArgumentParser(prog="python -m bench.relay_micro naive-relay")
        ap.add_argument("--port", type=int, default=PORT)
        a = ap.parse_args(argv[1:])
        naive_relay(a.port, PSK)
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.relay_micro",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="10,1000", help="comma-separated N")
    ap.add_argument("--relays", default="camex,naive",
                    help="camex, naive, camex-base (the camex of --baseline) and "
                    "cxserver (--cserver)")
    ap.add_argument("--baseline", help="a checkout whose camex runs as camex-base "
                    "(git archive COMMIT camex | tar -x -C DIR)")
    ap.add_argument("--cserver", help="a cxserver binary (a C model of the deployed "
                    "server, built elsewhere) to run as the relay `cxserver`")
    ap.add_argument("--fixed-rate", type=float, default=20000,
                    help="offered datagrams/s for the like-for-like CPU figure")
    ap.add_argument("--saturate", type=float, default=120000,
                    help="offered rate of a last step past every relay's limit (0: none)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="fixed-rate samples per relay, taken in turn")
    ap.add_argument("--start-rate", type=float, default=30000)
    ap.add_argument("--max-rate", type=float, default=400000)
    ap.add_argument("--step", type=float, default=1.0, help="seconds per rate step")
    ap.add_argument("--profile", type=float, default=0,
                    help="py-spy the relay for this many seconds at --fixed-rate instead")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every rate step")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if "camex-base" in args.relays and not args.baseline:
        ap.error("camex-base needs --baseline DIR")
    if "cxserver" in args.relays and not args.cserver:
        ap.error("cxserver needs --cserver BINARY")
    results = []
    load0 = os.getloadavg()
    for n in [int(x) for x in args.clients.split(",")]:
        for r in run_n(n, args.relays.split(","), args):
            results.append(r)
            if "error" in r:
                print(f"{r['relay']:10} N={n:5}  {r['error']}", flush=True)
                continue
            if args.profile:
                continue
            m = r["max"] or {}
            print(f"{r['relay']:10} N={n:5}  {args.fixed_rate:.0f}/s x{args.rounds}: "
                  f"median {r['fixed_cpu_us_median']:6.2f} us/dgram "
                  f"(kernel {r['fixed_sys_us_median']:5.2f}) "
                  f"(min {r['fixed_cpu_us_min']:.2f}, delivered >= "
                  f"{r['fixed_delivered_min']:.4f})  max loss-free "
                  f"{m.get('rate', 0):.0f}/s at {m.get('cpu_us', 0):.2f} us "
                  f"(sent {m.get('sent_rate', 0)}/s, generator {m.get('gen_cpu_us', 0):.2f} "
                  f"us/dgram)  peak RSS {r['peak_rss_kib']} KiB", flush=True)
            sat = r["saturated"]
            if sat:
                print(f"{'':10}          offered {sat['rate']:.0f}/s (sent {sat['sent_rate']}/s): "
                      f"relayed {sat['delivered'] * sat['sent_rate']:.0f}/s at {sat['cpu_us']:.2f} (kernel {sat['sys_us']:.2f}) "
                      f"us/dgram", flush=True)
    out = {"load_before": load0, "load_after": os.getloadavg(), "results": results}
    print(f"load average before {load0[0]:.2f}, after {out['load_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

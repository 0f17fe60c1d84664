"""The camera-fleet benchmark's traffic: a generator of N clients and a
receiver, each in a process of its own (forked, so neither shares a
core's worth of GIL with the other or with the driver), driven over a pipe.

Generator kinds:
- "legacy": N models of the deployed C client (lab.cclient.CClient: one
  UDP socket each, its own sender prefix and counter from 0, REGISTER
  MODE=MANUAL with its address, one inner packet per datagram, no
  offloads), all in one namespace.
- "v2": N camex v2 clients (camex.v2.client.ClientSession, through
  lab.loadgen.V2Load: the same handshake and framing as the daemon's
  client), one socket each, one inner packet per datagram.

Per step the generator seals every datagram of the step first (counters
increase datagram by datagram as the C client's do; sealing is timed
apart and reported, it is what the client would spend on the fly), then
sends them paced to the asked rate, round-robin over its clients, each
from its own socket. What the send loop costs per datagram is its own CPU
(getrusage) over the datagrams sent.

Receiver kinds:
- "cclient": one C-client model registered like the generator's clients;
  opens each datagram (with its replay window) and counts the inner
  packet's (step, k);
- "v2": one v2 client, the same;
- "tun": a UDP socket in the server's namespace bound to the gateway
  address: the server (--server-tun) writes the inner packets to its TUN,
  the kernel delivers them here.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import select
import socket
import time
from typing import Optional

from lab.attacks import ns_socket
from lab.cclient import DATA, CClient
from lab.loadgen import addresses, raise_fd_limit

from .fleet_core import SINK_PORT, StepCounter, inner_header, inner_packet, payload_tail, \
    tag_of_inner, tag_of_udp_payload

NET = "10.64.0.0/16"
GATEWAY = "10.64.0.1"
RCVBUF = 8 << 20        # receivers: a big socket buffer, so loss is the server's
REGISTER_EVERY = 25.0   # a little under the C client's 30 s
TICK = 0.0002           # the send loop's sleep when it is ahead of the asked rate


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fleet_addresses(n: int) -> tuple[list[str], str]:
    """Tunnel addresses of the N generator clients and of the receiver client."""
    a = addresses(n + 1, NET)
    return a[:n], a[n]


# ------------------------------------------------------------ generator


class _Generator:
    """What both generator kinds share: sealing a step, pacing its sends."""

    def __init__(self, n: int, dst: str):
        self.n = n
        self.dst = dst
        self.jobs: list = []
        self.step_sealed = None

    def seal_step(self, step: int, rate: float, seconds: float) -> dict:
        total = max(1, int(rate * seconds))
        tail = payload_tail()
        c0, t0 = _cpu(), time.monotonic()
        self.jobs = self._seal(step, total, tail)
        cpu = _cpu() - c0
        return {"total": len(self.jobs), "seal_s": round(time.monotonic() - t0, 3),
                "seal_cpu_us": round(cpu / len(self.jobs) * 1e6, 2)}

    def send_step(self, rate: float) -> dict:
        """Send the sealed step at ``rate`` datagrams/s: whatever is due by
        the clock goes out, then a short sleep; a send the kernel refuses
        (EAGAIN) is not offered."""
        jobs, total = self.jobs, len(self.jobs)
        sleep, now = time.sleep, time.monotonic
        sent = refused = k = 0
        c0 = _cpu()
        t0 = now()
        while k < total:
            due = min(total, int((now() - t0) * rate) + 1)
            if due <= k:
                sleep(TICK)
                continue
            for i in range(k, due):
                send, data = jobs[i]
                try:
                    send(data)
                    sent += 1
                except (BlockingIOError, ConnectionRefusedError):
                    refused += 1
            k = due
        seconds = now() - t0
        cpu = _cpu() - c0
        self.jobs = []
        return {"sent": sent, "refused": refused, "seconds": seconds, "cpu_s": cpu,
                "cpu_us": round(cpu / sent * 1e6, 3) if sent else None}


class LegacyGenerator(_Generator):
    def __init__(self, ns, server: tuple, n: int, passphrase: bytes, dst: str, bind_ip: str):
        super().__init__(n, dst)
        raise_fd_limit(n + 256)
        addrs, _ = fleet_addresses(n)
        self.clients = [CClient(lambda: ns_socket(ns, bind=(bind_ip, 0)), server, passphrase,
                                local_ip=a) for a in addrs]
        for c in self.clients:
            c._connect()
        self.headers = [inner_header(a, dst) for a in addrs]
        self.registered_at = 0.0

    def register(self, batch: int = 50, pause: float = 0.005) -> int:
        for i, c in enumerate(self.clients):
            c.register()
            if i % batch == batch - 1:
                time.sleep(pause)
        self.registered_at = time.monotonic()
        return len(self.clients)

    def idle(self) -> None:
        # The C client repeats its REGISTER every 30 s; so do these, between steps.
        if time.monotonic() - self.registered_at > REGISTER_EVERY:
            self.register()

    def _seal(self, step: int, total: int, tail: bytes) -> list:
        n, clients, headers = self.n, self.clients, self.headers
        out = []
        for k in range(total):
            i = k % n
            c = clients[i]
            out.append((c.sock.send, c._frame(DATA, inner_packet(headers[i], step, k, tail))))
        return out


class V2Generator(_Generator):
    def __init__(self, ns, server: tuple, n: int, passphrase: bytes, dst: str, bind_ip: str):
        from lab.loadgen import V2Load

        super().__init__(n, dst)
        raise_fd_limit(n + 256)
        self.load = V2Load(ns, server, n, passphrase, net=NET, bind_ip=bind_ip, prefix="F")
        self.headers = [inner_header(c.address, dst) for c in self.load.clients]

    def register(self, timeout: float = 60.0) -> int:
        load = self.load
        load.start_all()
        deadline = time.monotonic() + timeout
        while len(load.up) < len(load.clients) and time.monotonic() < deadline:
            load.wait_up(min(5.0, deadline - time.monotonic()))
            for c in load.clients:   # handshakes the server dropped under the burst
                if c.index not in load.up:
                    load._handle(c, load.sessions[c.index].start(time.monotonic()), {})
        return len(load.up)

    def idle(self) -> None:
        self.load.collect(0.2)   # timers, keepalives, the server's answers

    def _seal(self, step: int, total: int, tail: bytes) -> list:
        n, load, headers = self.n, self.load, self.headers
        clients, sessions = load.clients, load.sessions
        out = []
        now = time.monotonic()
        for k in range(total):
            i = k % n
            c = clients[i]
            for d in sessions[c.index].encrypt([inner_packet(headers[i], step, k, tail)], now):
                out.append((c.sock.send, d))
        return out


# ------------------------------------------------------------ receivers


class _Receiver:
    def __init__(self):
        self.counter = StepCounter()
        self.datagrams = 0
        self.dropped = 0      # the C model's "Dropped packet from server" (replay)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, limit: int = 512) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        pass


def _big_buffer(sock: socket.socket) -> None:
    # SO_RCVBUFFORCE (root) passes net.core.rmem_max: the receiver must not
    # be where datagrams are lost.
    sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)


class CClientReceiver(_Receiver):
    def __init__(self, ns, server: tuple, passphrase: bytes, address: str, bind_ip: str):
        super().__init__()
        self.cc = CClient(lambda: ns_socket(ns, bind=(bind_ip, 0)), server, passphrase,
                          local_ip=address)
        self.cc._connect()
        self.sock = self.cc.sock
        _big_buffer(self.sock)
        self.cc.register()
        self.registered_at = time.monotonic()

    def drain(self, limit: int = 512) -> None:
        recv, open_, mark = self.sock.recv, self.cc._open, self.counter.mark
        dropped = len(self.cc.dropped)
        for _ in range(limit):
            try:
                d = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            self.datagrams += 1
            r = open_(d)
            if r is not None and r[0] == DATA and len(r[1]) >= 36:
                mark(*tag_of_inner(r[1]))
        self.dropped += len(self.cc.dropped) - dropped
        del self.cc.dropped[:]

    def tick(self) -> None:
        if time.monotonic() - self.registered_at > REGISTER_EVERY:
            self.cc.register()
            self.registered_at = time.monotonic()


class V2Receiver(_Receiver):
    def __init__(self, ns, server: tuple, passphrase: bytes, first: int, bind_ip: str):
        from lab.loadgen import V2Load

        super().__init__()
        self.load = V2Load(ns, server, 1, passphrase, net=NET, bind_ip=bind_ip, prefix="F",
                           first=first)
        self.client = self.load.clients[0]
        self.sess = self.load.sessions[self.client.index]
        self.sock = self.client.sock
        _big_buffer(self.sock)
        self.load.start_all()
        if self.load.wait_up(20.0) != 1:
            raise RuntimeError("the v2 receiver's handshake did not complete")

    def drain(self, limit: int = 512) -> None:
        from camex.v2.events import Deliver, DeliverFrame, Send

        recv, receive, mark, sock = self.sock.recv, self.sess.receive, self.counter.mark, self.sock
        now = time.monotonic
        for _ in range(limit):
            try:
                d = recv(65535)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                break
            self.datagrams += 1
            for ev in receive(d, now()):
                if type(ev) is Deliver:
                    for p in ev.packets:
                        if len(p) >= 36:
                            mark(*tag_of_inner(p))
                elif type(ev) is DeliverFrame:
                    for gso, p in ev.records:
                        if gso == 0 and len(p) >= 36:
                            mark(*tag_of_inner(p))
                        else:
                            self.counter.stray += 1
                elif type(ev) is Send:
                    try:
                        sock.send(ev.data)
                    except OSError:
                        pass

    def tick(self) -> None:
        t = self.sess.next_timer()
        if t is not None and t <= time.monotonic():
            self.load._handle(self.client, self.sess.on_timer(time.monotonic()), {})


class TunReceiver(_Receiver):
    """What the server delivers to its own TUN, as the kernel hands it to a
    socket bound to the gateway address."""

    def __init__(self, ns, gateway: str = GATEWAY):
        super().__init__()
        self.sock = ns_socket(ns, bind=(gateway, SINK_PORT))
        self.sock.setblocking(False)
        _big_buffer(self.sock)

    def drain(self, limit: int = 512) -> None:
        recv, mark = self.sock.recv, self.counter.mark
        for _ in range(limit):
            try:
                d = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            self.datagrams += 1
            if len(d) >= 8:
                mark(*tag_of_udp_payload(d))


# ------------------------------------------------------------ processes


def _receiver_main(conn, make) -> None:
    try:
        rx = make()
    except Exception as e:  # noqa: BLE001 - reported to the driver, which says what failed
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    cpu0 = _cpu()
    while True:
        ready, _, _ = select.select([rx, conn], [], [], 0.2)
        if rx in ready:
            rx.drain()
        rx.tick()
        if conn in ready:
            cmd, *args = conn.recv()
            if cmd == "expect":
                rx.counter.expect(*args)
                reply = None
            elif cmd == "count":
                step = args[0]
                reply = {"received": rx.counter.received(step), "stray": rx.counter.stray,
                         "datagrams": rx.datagrams, "replay_dropped": rx.dropped,
                         "cpu_s": round(_cpu() - cpu0, 3)}
            elif cmd == "silent":
                reply = rx.counter.silent(*args)
            elif cmd == "forget":
                rx.counter.forget(args[0])
                reply = None
            else:
                conn.send(("bye", None))
                return
            conn.send(("ok", reply))


def _generator_main(conn, make) -> None:
    try:
        gen = make()
        registered = gen.register()
    except Exception as e:  # noqa: BLE001 - reported to the driver
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", registered))
    while True:
        cmd, *args = conn.recv()
        if cmd == "seal":
            reply = gen.seal_step(*args)
        elif cmd == "send":
            reply = gen.send_step(*args)
        elif cmd == "idle":
            gen.idle()
            reply = None
        else:
            conn.send(("bye", None))
            return
        conn.send(("ok", reply))


class Worker:
    """A forked process running a generator or a receiver; call() sends one
    command and waits for its answer."""

    def __init__(self, target, make, name: str, timeout: float = 120.0):
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.name = name
        self.proc = ctx.Process(target=target, args=(child, make), name=name, daemon=True)
        self.proc.start()
        child.close()
        self.ready = self._answer(timeout)

    def _answer(self, timeout: float):
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.name}: no answer in {timeout:g} s")
        kind, value = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"{self.name}: {value}")
        return value

    def call(self, *cmd, timeout: float = 120.0):
        self.conn.send(cmd)
        return self._answer(timeout)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid

    def close(self) -> None:
        try:
            self.conn.send(("stop",))
        except OSError:
            pass
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(3)


def start_receiver(make) -> Worker:
    return Worker(_receiver_main, make, "fleet-receiver")


def start_generator(make, timeout: float = 180.0) -> Worker:
    return Worker(_generator_main, make, "fleet-generator", timeout=timeout)


def cpu_count_note() -> str:
    return f"{os.cpu_count()} cores"

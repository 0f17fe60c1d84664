"""Load generator: many legacy clients from one process.

Each simulated client has its own UDP socket (its own source port, so the
server sees a distinct endpoint), its own tunnel address and, in encrypted
mode, its own sender prefix and counter, exactly as a legacy C client: it
sends REGISTER (manual or auto), DATA whose inner packet carries its tunnel
address as source, and reads what the server relays to it. No TUN: the
inner packets are built and checked here.

    load = LegacyLoad(ns, ("10.250.2.1", 7000), 1000, passphrase=b"...", auto=True)
    load.register_all()          # paced, so the server's socket keeps up
    load.wait_configs()          # auto mode: every client got its CONFIG
    ok = load.relay_sample(50)   # a -> b for random pairs, checked byte for byte

`python -m lab.loadgen` is not provided: the lab tests drive it.
"""

from __future__ import annotations

import ipaddress
import random
import resource
import select
import socket
import time
from typing import Optional

from camex.legacy import codec

from .attacks import Sealer, ns_socket, udp_packet

SINK_PORT = 9


class LoadClient:
    __slots__ = ("index", "client_id", "address", "sock", "sealer", "config")

    def __init__(self, index, client_id, address, sock, sealer):
        self.index = index
        self.client_id = client_id
        self.address = address
        self.sock = sock
        self.sealer = sealer
        self.config = None  # the CONFIG text an auto client received


def addresses(n: int, net: str = "10.64.0.0/16") -> list[str]:
    hosts = ipaddress.IPv4Network(net).hosts()
    next(hosts)  # .0.1 stays the gateway
    return [str(next(hosts)) for _ in range(n)]


def auto_config_text(n: int, net: str = "10.64.0.0/16", prefix: str = "L") -> str:
    """A server configuration with one [client] section per load client."""
    plen = ipaddress.IPv4Network(net).prefixlen
    gw = str(ipaddress.IPv4Network(net).network_address + 1)
    lines = ["[defaults]", f"gateway_ip={gw}"]
    for i, a in enumerate(addresses(n, net)):
        lines += [f"[client {prefix}{i:05d}]", f"local_cidr={a}/{plen}"]
    return "\n".join(lines) + "\n"


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))


class LegacyLoad:
    def __init__(self, ns, server: tuple, n: int, passphrase: Optional[bytes] = None,
                 auto: bool = False, net: str = "10.64.0.0/16", bind_ip: str = "",
                 prefix: str = "L", seed: int = 1):
        raise_fd_limit(n + 256)
        self.server = server
        self.auto = auto
        self.rng = random.Random(seed)
        self.clients: list[LoadClient] = []
        for i, addr in enumerate(addresses(n, net)):
            s = ns_socket(ns, bind=(bind_ip, 0))
            s.setblocking(False)
            sealer = Sealer(passphrase) if passphrase else None
            self.clients.append(LoadClient(i, f"{prefix}{i:05d}", addr, s, sealer))

    # ------------------------------------------------------------ sending

    def _wire(self, c: LoadClient, ptype: int, payload: bytes) -> bytes:
        return c.sealer.seal(ptype, payload) if c.sealer else payload

    def register(self, c: LoadClient) -> None:
        msg = codec.register_auto(c.client_id) if self.auto else codec.register_manual(c.address)
        c.sock.sendto(self._wire(c, codec.T_REGISTER, msg), self.server)

    def register_all(self, batch: int = 50, pause: float = 0.005) -> float:
        """REGISTER every client, ``batch`` at a time; return the seconds."""
        t0 = time.monotonic()
        for i, c in enumerate(self.clients):
            self.register(c)
            if i % batch == batch - 1:
                self.collect(pause)
        return time.monotonic() - t0

    def send_data(self, src: LoadClient, dst: LoadClient, payload: bytes) -> bytes:
        inner = udp_packet(src.address, 40000 + src.index % 20000, dst.address, SINK_PORT, payload)
        src.sock.sendto(self._wire(src, codec.T_DATA, inner), self.server)
        return inner

    # ---------------------------------------------------------- receiving

    def _read(self, c: LoadClient):
        """(type, plaintext) of each datagram waiting on ``c``'s socket."""
        out = []
        while True:
            try:
                d = c.sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                return out
            if c.sealer:
                try:
                    out.append(c.sealer.open(d))
                except Exception:  # noqa: BLE001 - a bad datagram is counted by the caller
                    out.append((None, d))
            else:
                out.append((codec.T_CONFIG if codec.is_control(d) else codec.T_DATA, d))

    def collect(self, wait: float) -> dict:
        """Read every socket for ``wait`` seconds; CONFIGs are stored on the
        clients; returns {index: [DATA plaintexts]}."""
        got: dict = {}
        by_fd = {c.sock.fileno(): c for c in self.clients}
        deadline = time.monotonic() + wait
        poller = select.epoll()
        try:
            for fd in by_fd:
                poller.register(fd, select.EPOLLIN)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for fd, _ in poller.poll(left):
                    c = by_fd[fd]
                    for ptype, data in self._read(c):
                        if ptype == codec.T_CONFIG:
                            c.config = bytes(data)
                        else:
                            got.setdefault(c.index, []).append(bytes(data))
        finally:
            poller.close()
        return got

    def wait_configs(self, timeout: float = 10.0, retry: float = 2.0) -> int:
        """Auto mode: collect CONFIGs, re-sending REGISTER (as a legacy
        client would) for those still waiting; return how many have one."""
        deadline = time.monotonic() + timeout
        while True:
            self.collect(min(retry, max(0.0, deadline - time.monotonic())))
            missing = [c for c in self.clients if c.config is None]
            if not missing or time.monotonic() >= deadline:
                return len(self.clients) - len(missing)
            for c in missing:
                self.register(c)

    def relay_sample(self, pairs: int, wait: float = 1.0) -> dict:
        """Send one DATA for each of ``pairs`` random (a, b) pairs and check
        that b, and only b, received exactly a's inner packet."""
        sent = {}
        for k in range(pairs):
            a, b = self.rng.sample(self.clients, 2)
            payload = f"load {k} {a.client_id}->{b.client_id}".encode()
            sent.setdefault(b.index, []).append(self.send_data(a, b, payload))
        got = self.collect(wait)
        correct = sum(1 for idx, pkts in sent.items() for p in pkts if p in got.get(idx, []))
        stray = sum(len([p for p in pkts if p not in sent.get(idx, [])]) for idx, pkts in got.items())
        return {"sent": pairs, "correct": correct, "stray": stray}

    def close(self) -> None:
        for c in self.clients:
            c.sock.close()


# ------------------------------------------------------------------- v2


class V2Load:
    """Many camex v2 clients (camex.v2.client.ClientSession, the same
    handshake and data framing as the daemon's client) from one process,
    one UDP socket each. The passphrase is stretched once (scrypt is the
    point of v2's KDF, and every simulated client uses the global key)."""

    def __init__(self, ns, server: tuple, n: int, passphrase: bytes, auto: bool = False,
                 net: str = "10.64.0.0/16", bind_ip: str = "", prefix: str = "L", seed: int = 1,
                 bind_ips: Optional[list] = None):
        from camex.v2 import kdf, wire
        from camex.v2.client import ClientSession

        raise_fd_limit(n + 256)
        self.server = server
        self.rng = random.Random(seed)
        psks = [kdf.derive_psk(passphrase, None)]
        plen = ipaddress.IPv4Network(net).prefixlen
        self.clients: list[LoadClient] = []
        self.sessions = {}
        self.up = set()
        self.refused = 0
        for i, addr in enumerate(addresses(n, net)):
            # Spread over several source addresses (many sites) if given: the
            # v2 server limits handshakes per source address under load.
            s = ns_socket(ns, bind=(bind_ips[i % len(bind_ips)] if bind_ips else bind_ip, 0))
            s.setblocking(False)
            s.connect(server)
            cid = f"{prefix}{i:05d}"
            req = wire.Request(auto=True) if auto else \
                wire.Request(local_cidr=ipaddress.IPv4Interface(f"{addr}/{plen}"))
            c = LoadClient(i, cid, addr, s, None)
            self.clients.append(c)
            self.sessions[i] = ClientSession(psks, cid, req)

    def _handle(self, c: LoadClient, events, got: dict) -> None:
        from camex.v2.events import Deliver, Refused, Send, Up

        for ev in events:
            if isinstance(ev, Send):
                try:
                    c.sock.send(ev.data)
                except (BlockingIOError, ConnectionRefusedError):
                    pass
            elif isinstance(ev, Up):
                self.up.add(c.index)
                if ev.config is not None and ev.config.local_cidr is not None:
                    c.config = ev.config
            elif isinstance(ev, Deliver):
                got.setdefault(c.index, []).extend(bytes(p) for p in ev.packets)
            elif isinstance(ev, Refused):
                self.refused += 1

    def start_all(self, batch: int = 50, pause: float = 0.005) -> float:
        t0 = time.monotonic()
        for i, c in enumerate(self.clients):
            self._handle(c, self.sessions[c.index].start(time.monotonic()), {})
            if i % batch == batch - 1:
                self.collect(pause)
        return time.monotonic() - t0

    def collect(self, wait: float) -> dict:
        got: dict = {}
        by_fd = {c.sock.fileno(): c for c in self.clients}
        deadline = time.monotonic() + wait
        poller = select.epoll()
        try:
            for fd in by_fd:
                poller.register(fd, select.EPOLLIN)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for fd, _ in poller.poll(min(left, 0.2)):
                    c = by_fd[fd]
                    sess = self.sessions[c.index]
                    while True:
                        try:
                            d = c.sock.recv(65535)
                        except (BlockingIOError, ConnectionRefusedError):
                            break
                        self._handle(c, sess.receive(d, time.monotonic()), got)
                self._timers(got)
        finally:
            poller.close()
        return got

    def _timers(self, got: dict) -> None:
        now = time.monotonic()
        for c in self.clients:
            sess = self.sessions[c.index]
            t = sess.next_timer()
            if t is not None and t <= now:
                self._handle(c, sess.on_timer(now), got)

    def wait_up(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while len(self.up) < len(self.clients) and time.monotonic() < deadline:
            self.collect(0.5)
        return len(self.up)

    def relay_sample(self, pairs: int, wait: float = 1.0) -> dict:
        sent = {}
        for k in range(pairs):
            a, b = self.rng.sample(self.clients, 2)
            payload = f"load v2 {k} {a.client_id}->{b.client_id}".encode()
            inner = udp_packet(a.address, 40000 + a.index % 20000, b.address, SINK_PORT, payload)
            sent.setdefault(b.index, []).append(inner)
            for d in self.sessions[a.index].encrypt([inner], time.monotonic()):
                try:
                    a.sock.send(d)  # encrypt() gives datagrams, not events
                except (BlockingIOError, ConnectionRefusedError):
                    pass
        got = self.collect(wait)
        got = {i: [p for p in pkts if p] for i, pkts in got.items()}
        correct = sum(1 for idx, pkts in sent.items() for p in pkts if p in got.get(idx, []))
        stray = sum(len([p for p in pkts if p not in sent.get(idx, [])]) for idx, pkts in got.items())
        return {"sent": pairs, "correct": correct, "stray": stray}

    def close(self) -> None:
        for c in self.clients:
            c.sock.close()

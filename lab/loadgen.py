"""Load generator: many camex clients from one process, no TUN.

Each simulated legacy client has its own source port (the server sees a
distinct endpoint), its own tunnel address and, in encrypted mode, its own
sender prefix and counter, exactly as a legacy C client: it sends REGISTER
(manual or auto), DATA whose inner packet carries its tunnel address as
source, and reads what the server relays to it. Three generators:

- `LegacyLoad`: one UDP socket per client, which reads what the server
  sends (CONFIGs, relayed DATA); the ops tests (tests/integration/test_load_*).
- `SpoofedLoad`: REGISTERs only, all from one raw socket (a source port of
  one address per client, no socket or file descriptor each), so tens of
  thousands fit in one process; the 10,000-client bench (bench/load.py).
- `V2Load`: v2 clients (camex.v2.client.ClientSession), one socket each.

    load = LegacyLoad(ns, ("10.250.2.1", 7000), 1000, passphrase=b"...", auto=True)
    load.register_all()          # paced, so the server's socket keeps up
    load.wait_configs()          # auto mode: every client got its CONFIG
    ok = load.relay_sample(50)   # a -> b for random pairs, checked byte for byte

`python -m bench.load` is the command-line tool (server memory and relay
speed with N registered clients); the lab tests drive this module directly.
"""

from __future__ import annotations

import ipaddress
import random
import resource
import select
import threading
import time
from typing import Callable, Optional
from collections.abc import Iterable

from camex.legacy import codec

from .attacks import Forger, Sealer, ns_socket, udp_packet

SINK_PORT = 9
FIRST_SPORT = 10000  # SpoofedLoad's client i sends from port FIRST_SPORT + i
REFRESH = 30.0  # legacy clients repeat REGISTER every 30 s


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


def make_clients(n: int, net: str, prefix: str,
                 passphrase: Optional[bytes] = None, first: int = 0) -> list[LoadClient]:
    """``n`` clients: ID ``<prefix>00000`` up, tunnel addresses of ``net``
    from .2 (see addresses()), with a passphrase each its own sender prefix
    and counter (one cipher object shared by all)."""
    aead = Sealer(passphrase).aead if passphrase else None
    return [LoadClient(i, f"{prefix}{i:05d}", addr, None,
                       Sealer(passphrase, aead=aead) if passphrase else None)
            for i, addr in enumerate(addresses(first + n, net)) if i >= first]


def open_sockets(ns, clients: list[LoadClient], bind_ips: Iterable[str],
                 connect: Optional[tuple] = None) -> None:
    """A non-blocking UDP socket in ``ns`` per client, bound to the next
    of ``bind_ips`` in turn (an ephemeral port each)."""
    raise_fd_limit(len(clients) + 256)
    ips = list(bind_ips)
    for c in clients:
        c.sock = ns_socket(ns, bind=(ips[c.index % len(ips)], 0))
        c.sock.setblocking(False)
        if connect is not None:
            c.sock.connect(connect)


def poll_sockets(clients: list[LoadClient], wait: float, on_readable: Callable,
                 tick: Optional[Callable] = None) -> None:
    """For ``wait`` seconds, call ``on_readable(client)`` whenever a client's
    socket has data; with ``tick``, call it at least every 0.2 s too."""
    by_fd = {c.sock.fileno(): c for c in clients}
    deadline = time.monotonic() + wait
    poller = select.epoll()
    try:
        for fd in by_fd:
            poller.register(fd, select.EPOLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ in poller.poll(left if tick is None else min(left, 0.2)):
                on_readable(by_fd[fd])
            if tick is not None:
                tick()
    finally:
        poller.close()


def score(pairs: int, sent: dict, got: dict) -> dict:
    """{sent, correct, stray} of a relay sample: ``sent`` and ``got`` map a
    client index to the inner packets meant for / received by it."""
    correct = sum(1 for idx, pkts in sent.items() for p in pkts if p in got.get(idx, []))
    stray = sum(len([p for p in pkts if p not in sent.get(idx, [])]) for idx, pkts in got.items())
    return {"sent": pairs, "correct": correct, "stray": stray}


def inner_packet(src: LoadClient, dst: LoadClient, payload: bytes) -> bytes:
    """The IPv4/UDP packet client ``src`` tunnels to ``dst``."""
    return udp_packet(src.address, 40000 + src.index % 20000, dst.address, SINK_PORT, payload)


# ---------------------------------------------------------------- legacy


class _LegacyClients:
    """What both legacy generators share: the clients and their REGISTERs
    (manual or auto, sealed if there is a passphrase), sent in paced
    batches. A subclass says how a datagram leaves (_send) and what to do
    between batches (_pause)."""

    def __init__(self, server: tuple, n: int, passphrase: Optional[bytes], auto: bool,
                 net: str, prefix: str, seed: int):
        self.server = server
        self.auto = auto
        self.rng = random.Random(seed)
        self.sent = 0  # datagrams sent
        self.clients = make_clients(n, net, prefix, passphrase)

    def _wire(self, c: LoadClient, ptype: int, payload: bytes) -> bytes:
        return c.sealer.seal(ptype, payload) if c.sealer else payload

    def _send(self, c: LoadClient, datagram: bytes) -> None:
        raise NotImplementedError

    def _pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def register(self, c: LoadClient) -> None:
        msg = codec.register_auto(c.client_id) if self.auto else codec.register_manual(c.address)
        self._send(c, self._wire(c, codec.T_REGISTER, msg))
        self.sent += 1

    def register_all(self, which: Optional[Iterable[LoadClient]] = None, batch: int = 50,
                     pause: float = 0.005) -> float:
        """REGISTER every client (of ``which``), ``batch`` at a time with a
        ``pause`` between, so the server's socket keeps up; return the seconds."""
        t0 = time.monotonic()
        for i, c in enumerate(self.clients if which is None else which):
            self.register(c)
            if i % batch == batch - 1:
                self._pause(pause)
        return time.monotonic() - t0


class LegacyLoad(_LegacyClients):
    """Legacy clients with a UDP socket each: they register, relay DATA to
    one another and read what the server sends them."""

    def __init__(self, ns, server: tuple, n: int, passphrase: Optional[bytes] = None,
                 auto: bool = False, net: str = "10.64.0.0/16", bind_ip: str = "",
                 prefix: str = "L", seed: int = 1):
        super().__init__(server, n, passphrase, auto, net, prefix, seed)
        open_sockets(ns, self.clients, [bind_ip])

    def _send(self, c: LoadClient, datagram: bytes) -> None:
        c.sock.sendto(datagram, self.server)

    def _pause(self, seconds: float) -> None:
        self.collect(seconds)  # read the answers meanwhile

    def send_data(self, src: LoadClient, dst: LoadClient, payload: bytes) -> bytes:
        inner = inner_packet(src, dst, payload)
        self._send(src, self._wire(src, codec.T_DATA, inner))
        self.sent += 1
        return inner

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

        def readable(c: LoadClient) -> None:
            for ptype, data in self._read(c):
                if ptype == codec.T_CONFIG:
                    c.config = bytes(data)
                else:
                    got.setdefault(c.index, []).append(bytes(data))

        poll_sockets(self.clients, wait, readable)
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
        return score(pairs, sent, self.collect(wait))

    def close(self) -> None:
        for c in self.clients:
            c.sock.close()


class SpoofedLoad(_LegacyClients):
    """Legacy clients that only REGISTER, from one raw socket in ``ns``
    (lab.attacks.Forger: we write the IPv4 and UDP headers): client i is
    ``src``:FIRST_SPORT + i. No socket or file descriptor per client, so
    tens of thousands fit; nothing reads what the server sends back (a
    manual REGISTER gets no answer anyway)."""

    def __init__(self, ns, server: tuple, n: int, src: str, passphrase: Optional[bytes] = None,
                 auto: bool = False, net: str = "10.64.0.0/16", prefix: str = "L", seed: int = 1):
        if FIRST_SPORT + n > 65536:
            raise ValueError(f"at most {65536 - FIRST_SPORT} clients from one address")
        super().__init__(server, n, passphrase, auto, net, prefix, seed)
        self.src = src
        self.forger = Forger(ns)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def endpoint(self, c: LoadClient) -> str:
        """``address:port`` of client ``c`` as the server's status shows it."""
        return f"{self.src}:{FIRST_SPORT + c.index}"

    def _send(self, c: LoadClient, datagram: bytes) -> None:
        self.forger.send(self.src, FIRST_SPORT + c.index, self.server[0], self.server[1], datagram)

    def start_refresh(self, period: float = REFRESH) -> None:
        """Repeat every client's REGISTER, spread evenly over ``period``
        seconds, in a background thread until close() (legacy clients do;
        the server forgets a client after 120 s of silence)."""

        def loop():
            n = len(self.clients)
            per_tick = max(1, int(n * 0.1 / period))  # one slice every 100 ms
            i = 0
            while not self._stop.wait(0.1):
                for _ in range(per_tick):
                    self.register(self.clients[i])
                    i = (i + 1) % n

        self._thread = threading.Thread(target=loop, name="refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        self.forger.close()


# ------------------------------------------------------------------- v2


class V2Load:
    """Many camex v2 clients (camex.v2.client.ClientSession, the same
    handshake and data framing as the daemon's client) from one process,
    one UDP socket each. The passphrase is stretched once (scrypt is the
    point of v2's KDF, and every simulated client uses the global key)."""

    def __init__(self, ns, server: tuple, n: int, passphrase: bytes, auto: bool = False,
                 net: str = "10.64.0.0/16", bind_ip: str = "", prefix: str = "L", seed: int = 1,
                 bind_ips: Optional[list] = None, first: int = 0):
        """`first`: skip that many clients (IDs and addresses): a second
        load beside a first one."""
        from camex.v2 import kdf, wire
        from camex.v2.client import ClientSession

        self.server = server
        self.rng = random.Random(seed)
        psks = [kdf.derive_psk(passphrase, None)]
        plen = ipaddress.IPv4Network(net).prefixlen
        self.clients = make_clients(n, net, prefix, first=first)
        self.sessions = {}
        self.up = set()
        self.refused = 0
        # Spread over several source addresses (many sites) if given: the
        # v2 server limits handshakes per source address under load.
        open_sockets(ns, self.clients, bind_ips or [bind_ip], connect=server)
        for c in self.clients:
            req = wire.Request(auto=True) if auto else \
                wire.Request(local_cidr=ipaddress.IPv4Interface(f"{c.address}/{plen}"))
            self.sessions[c.index] = ClientSession(psks, c.client_id, req)

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

        def readable(c: LoadClient) -> None:
            sess = self.sessions[c.index]
            while True:
                try:
                    d = c.sock.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    return
                self._handle(c, sess.receive(d, time.monotonic()), got)

        poll_sockets(self.clients, wait, readable, tick=lambda: self._timers(got))
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
            inner = inner_packet(a, b, f"load v2 {k} {a.client_id}->{b.client_id}".encode())
            sent.setdefault(b.index, []).append(inner)
            for d in self.sessions[a.index].encrypt([inner], time.monotonic()):
                try:
                    a.sock.send(d)  # encrypt() gives datagrams, not events
                except (BlockingIOError, ConnectionRefusedError):
                    pass
        got = self.collect(wait)
        return score(pairs, sent, {i: [p for p in pkts if p] for i, pkts in got.items()})

    def close(self) -> None:
        for c in self.clients:
            c.sock.close()

"""An in-memory network for the v2 state machines (tests, examples, and
generating sample v2 traffic for the dissector's tests).

One V2Server, any number of ClientSessions at (host, port) addresses, a
fake clock, and a wire that logs every datagram and can drop, duplicate or
redirect them. Nothing here touches a socket.
"""

from __future__ import annotations

import struct

from ..v2.events import Deliver, Send


def ipv4(src: str, dst: str, payload: bytes = b"", proto: int = 17) -> bytes:
    """A minimal IPv4 packet (no checksum: nothing here checks it)."""
    import ipaddress
    total = 20 + len(payload)
    return (struct.pack("!BBHHHBBH", 0x45, 0, total, 0, 0, 64, proto, 0)
            + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + payload)


def handshake(srv, cli, addr, now: float, rounds: int = 10) -> bool:
    """Start a v2 client core (camex.v2.core.V2ClientCore) towards a server
    core at `addr`, then move the client's datagrams to the server and the
    server's answers for `addr` back, `rounds` times, all at `now` (the
    benchmarks' set-up of established sessions). True if the client is
    established."""
    cli.start(now)
    cli.connected(now)
    for _ in range(rounds):
        for d in cli.to_net:
            srv.datagram_received(d, addr, now)
        cli.to_net.clear()
        for d, a in srv.outbox:
            if a == addr:
                cli.datagram_received(d, now)
        srv.outbox.clear()
    return cli.established


class MemLab:
    def __init__(self, server, now: float = 1000.0):
        self.server = server
        self.now = now
        self.clients = {}         # name -> ClientSession
        self.addrs = {}           # name -> (host, port)
        self.server_up = True     # False: datagrams to the server vanish
        self.drop = None          # callable(direction, data) -> True to drop
        self.log = []             # (time, "c2s"|"s2c", name, data)
        self.server_got = []      # Deliver events on the server
        self.server_events = []   # everything else the server said
        self.client_got = {}      # name -> [packets]
        self.client_events = {}   # name -> [events]

    def add(self, name: str, client, addr) -> None:
        self.clients[name] = client
        self.addrs[name] = addr
        self.client_got[name] = []
        self.client_events[name] = []

    def name_of(self, addr):
        for n, a in self.addrs.items():
            if a == addr:
                return n
        return None

    # --- moving datagrams ---------------------------------------------------

    def start(self, name: str) -> None:
        self.client_actions(name, self.clients[name].start(self.now))

    def send_from(self, name: str, packets) -> None:
        for d in self.clients[name].encrypt(packets, self.now):
            self.to_server(d, self.addrs[name], name)

    def send_to(self, name: str, packets) -> None:
        peer = self.peer(name)
        for d, addr in self.server.send(peer, packets, self.now):
            self.to_client(d, addr)

    def to_server(self, data, addr, name=None) -> None:
        self.log.append((self.now, "c2s", name or self.name_of(addr), bytes(data)))
        if not self.server_up or (self.drop and self.drop("c2s", data)):
            return
        self.server_actions(self.server.receive(data, addr, self.now))

    def to_client(self, data, addr) -> None:
        name = self.name_of(addr)
        self.log.append((self.now, "s2c", name, bytes(data)))
        if name is None or (self.drop and self.drop("s2c", data)):
            return
        self.client_actions(name, self.clients[name].receive(data, self.now))

    def server_actions(self, actions) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.to_client(a.data, a.addr)
            elif isinstance(a, Deliver):
                self.server_got.append(a)
            else:
                self.server_events.append(a)

    def client_actions(self, name: str, actions) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.to_server(a.data, self.addrs[name], name)
            elif isinstance(a, Deliver):
                self.client_got[name].extend(a.packets)
            else:
                self.client_events[name].append(a)

    # --- time ---------------------------------------------------------------

    def run(self, seconds: float, step: float = 0.05, each=None) -> None:
        """Advance the clock, firing every timer that falls due; `each(lab)`
        runs once per step (to generate traffic)."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            if each is not None:
                each(self)
            self.fire()

    def fire(self) -> None:
        for _ in range(8):  # a timer may set another one due at once
            fired = False
            t = self.server.next_timer()
            if t is not None and t <= self.now:
                fired = True
                self.server_actions(self.server.on_timer(self.now))
            for name, c in self.clients.items():
                t = c.next_timer()
                if t is not None and t <= self.now:
                    fired = True
                    self.client_actions(name, c.on_timer(self.now))
            if not fired:
                return

    # --- inspection ---------------------------------------------------------

    def peer(self, name: str):
        addr = self.addrs[name]
        for p in self.server.peers.values():
            if p.endpoint == addr:
                return p
        return None

    def sent(self, direction: str, name: str | None = None, kind: int | None = None):
        return [d for (_, dr, n, d) in self.log
                if dr == direction and (name is None or n == name)
                and (kind is None or (len(d) > 1 and d[1] == kind))]


class Profile:
    """Stand-in for config.Profile (same attribute names)."""

    def __init__(self, local_cidr=None, gateway_ip=None, routes=(), mtu=None):
        import ipaddress
        self.local_cidr = ipaddress.IPv4Interface(local_cidr) if local_cidr else None
        self.gateway_ip = ipaddress.IPv4Address(gateway_ip) if gateway_ip else None
        self.routes = [ipaddress.IPv4Network(r) for r in routes]
        self.mtu = mtu


def make_server(global_psk=None, client_psks=None, profiles=None, behind=None, **kw):
    """A V2Server over plain dicts: PSKs given directly (no scrypt), profiles
    {id: Profile}, behind {id: [networks]}; ids case-insensitive."""
    import ipaddress
    from ..v2.server import V2Server, grant_for
    client_psks = {k.lower(): v for k, v in (client_psks or {}).items()}
    profiles = {k.lower(): v for k, v in (profiles or {}).items()}
    behind = {k.lower(): [ipaddress.IPv4Network(n) for n in v] for k, v in (behind or {}).items()}

    def psk_for(cid):
        return client_psks.get(cid.lower(), global_psk)

    def authorize(cid, request):
        return grant_for(request, profiles.get(cid.lower()), behind.get(cid.lower(), ()))

    return V2Server(psk_for, authorize, **kw)


def det_rng(seed: bytes):
    """A reproducible stand-in for os.urandom: BLAKE2s of the seed and a
    counter (tests and sample traffic; never for real keys)."""
    import hashlib
    n = [0]

    def rng(k: int) -> bytes:
        out = b""
        while len(out) < k:
            n[0] += 1
            out += hashlib.blake2s(seed + n[0].to_bytes(8, "big")).digest()
        return out[:k]
    return rng


def sample_traffic(seed: bytes = b"camex v2 sample") -> dict:
    """A short, reproducible v2 conversation (fixed randomness and ephemeral
    keys): INIT, COOKIE, INIT with mac2, RESP, DATA both ways, keepalives,
    NOSESSION. For dissector and layer tests. Returns {"psk", "keylog",
    "datagrams": [(direction, hex)]} - the PSK is the raw 32-byte key."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ..v2 import wire
    from ..v2.client import ClientSession

    rng = det_rng(seed)

    def keygen():
        return X25519PrivateKey.from_private_bytes(rng(32))

    psk = hashlib.blake2s(seed + b" psk").digest()
    keylog = []
    srv = make_server(global_psk=psk, profiles={"cam1": Profile("10.0.0.2/24", "10.0.0.1",
                                                                ["10.251.0.0/24"], 1400)},
                      rng=rng, keygen=keygen, keylog=keylog.append, load_threshold=0)
    lab = MemLab(srv)
    lab.add("c", ClientSession([psk], "cam1", wire.Request(auto=True), rng=rng,
                               keygen=keygen, keylog=keylog.append), ("192.0.2.10", 40000))
    lab.start("c")                       # INIT -> COOKIE (server "under load")
    lab.run(1.2)                         # INIT with mac2 -> RESP -> keepalive (+ echo)
    lab.send_from("c", [ipv4("10.0.0.2", "10.251.0.9", b"ping"),
                        ipv4("10.0.0.2", "10.251.0.9", b"ping2")])
    lab.send_to("c", [ipv4("10.251.0.9", "10.0.0.2", b"pong")])
    lab.to_server(wire.data_header(0x01020304, 0) + bytes(16), ("192.0.2.10", 40000))
    return {"psk": psk.hex(), "keylog": keylog,
            "datagrams": [(d, data.hex()) for _, d, _, data in lab.log]}

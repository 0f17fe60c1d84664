"""A legacy server core and legacy client cores with explicit delivery (Net),
the auto-mode database of the captures, reproducible sender prefixes: the
set-up of tests/unit/test_core_legacy.py and test_server_state.py."""

from __future__ import annotations

import ipaddress
import itertools
from camex.daemon.config import parse_config
from camex.legacy.client import LegacyClient
from camex.legacy.server import LegacyServer
from camex.legacy import codec

A1 = ("10.250.0.2", 40001)
A2 = ("10.250.1.2", 40002)
EVIL = ("10.250.9.9", 40666)
GLOBAL = b"demo-global-secret"
C2PSK = b"per-client-secret-c2"

DB = """
[defaults]
gateway_ip=10.0.0.1
mtu=1400
route_cidr=10.251.0.0/24

[client C1]
local_cidr=10.0.0.2/24

[client C2]
local_cidr=10.0.0.3/24
psk=per-client-secret-c2
"""


def ip_packet(src, dst, payload=b"x" * 12):
    """A minimal IPv4 header + payload; the cores only read addresses."""
    total = 20 + len(payload)
    return (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(4) + bytes([64, 1, 0, 0])
            + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + payload)


_PREFIXES = itertools.count(1)


def counter_rng():
    """Distinct, reproducible sender prefixes (real ones are random)."""
    return lambda n: next(_PREFIXES).to_bytes(n, "big")


class Net:
    """A server core and client cores, with explicit delivery.

    With `batched` (a class attribute the tests may flip), datagrams reach
    the server as the daemon's recvmmsg path hands them over: through
    LegacyServer.relay_batch as memoryviews, and what it leaves through
    datagram_received."""

    batched = False

    def __init__(self, encrypt, config_text=None, global_psk=GLOBAL):
        self.cfg = parse_config(config_text, "test.conf") if config_text else None
        self.server = LegacyServer(encrypt=encrypt,
                                   global_key=codec.derive_key(global_psk) if encrypt else None,
                                   config=self.cfg, rng=counter_rng())
        self.now = 100.0
        self.captured = []  # every datagram sent to the server, for replay attacks

    def client(self, psk=None, **kw):
        c = LegacyClient(key=codec.derive_key(psk) if psk else None, rng=counter_rng(), **kw)
        c.start(self.now)
        c.connected(self.now)
        return c

    def up(self, client, addr):
        """Deliver everything `client` queued to the server from `addr`."""
        for d in client.to_net:
            self.captured.append((d, addr))
        self.receive_many([(d, addr) for d in client.to_net])
        client.to_net.clear()

    def receive(self, data, addr, now=None) -> None:
        """One datagram into the server (batched or not, see the class)."""
        self.receive_many([(data, addr)], now)

    def receive_many(self, pairs, now=None) -> None:
        now = self.now if now is None else now
        if not self.batched:
            for d, addr in pairs:
                self.server.datagram_received(d, addr, now)
            return
        def other(d, addr, _size, t):
            assert type(d) is bytes   # what is left outlives the receive buffers
            self.server.datagram_received(d, addr, t)

        self.server.relay_batch([(memoryview(d), a, 0) for d, a in pairs], now, other)

    def down(self, clients_by_addr):
        """Deliver the server's outbox to the clients; return undeliverable."""
        lost = []
        for d, addr in self.server.outbox:
            if addr in clients_by_addr:
                clients_by_addr[addr].datagram_received(d, self.now)
            else:
                lost.append((d, addr))
        self.server.outbox.clear()
        return lost


def manual_pair(psk):
    """A server (encrypted iff ``psk``) with manual clients C1 (10.0.0.2,
    from A1) and C2 (10.0.0.3, from A2) registered."""
    net = Net(encrypt=psk is not None)
    c1 = net.client(psk, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"))
    c2 = net.client(psk, auto=False, local_cidr=ipaddress.IPv4Interface("10.0.0.3/24"))
    net.up(c1, A1)
    net.up(c2, A2)
    return net, c1, c2

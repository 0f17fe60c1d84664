"""The two-protocol server core (ServerMux) and client cores of both protocols
wired in memory (World): the set-up of tests/unit/test_core_mux.py and
test_addrpolicy.py."""

from __future__ import annotations

import ipaddress
from camex.daemon.config import parse_config
from camex.legacy.client import LegacyClient
from camex.tunnel.server import ServerMux
from camex.legacy import codec
from camex.tunnel.client import AutoClientCore
from camex.v2.core import V2ClientCore

PASS = b"demo-global-secret"
C2PASS = b"per-client-secret-c2"
DB = """
[defaults]
gateway_ip=10.0.0.1
route_cidr=10.251.0.0/24

[client C1]
local_cidr=10.0.0.2/24

[client C2]
local_cidr=10.0.0.3/24
psk=per-client-secret-c2
"""
A1, A2, A3 = ("10.250.0.2", 4001), ("10.250.1.2", 4002), ("10.250.2.2", 4003)


def ip_packet(src, dst, payload=b"p" * 16):
    total = 20 + len(payload)
    return (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0])
            + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + payload)


class World:
    def __init__(self, **kw):
        self.now = 1000.0
        self.server = ServerMux(passphrase=PASS, encrypt=True,
                                config=parse_config(DB, "t.conf"), **kw)
        self.clients = {}

    def add(self, addr, core):
        self.clients[addr] = core
        core.start(self.now)
        core.connected(self.now)
        self.pump()

    def pump(self, rounds=6):
        for _ in range(rounds):
            for addr, c in self.clients.items():
                out, c.to_net = list(c.to_net), []
                for d in out:
                    self.server.datagram_received(d, addr, self.now)
            out, self.server.outbox[:] = list(self.server.outbox), []
            for d, addr in out:
                if addr in self.clients:
                    self.clients[addr].datagram_received(d, self.now)


def relays_both_ways(w: World, c1, c2, a: str = "10.0.0.2", b: str = "10.0.0.3") -> None:
    """One packet each way through the server, c1 (from `a`) to c2 (at
    `b`) first: each receives exactly the other's."""
    p12 = ip_packet(a, b)
    c1.tun_packet(p12, w.now)
    w.pump()
    assert c2.to_tun == [p12]
    p21 = ip_packet(b, a)
    c2.tun_packet(p21, w.now)
    w.pump()
    assert c1.to_tun == [p21]


def v2_client(client_id, passphrase, auto=True, local=None):
    """What the daemon runs with --protocol auto and a passphrase."""
    v2 = V2ClientCore(auto=auto, passphrase=passphrase, client_id=client_id, local_cidr=local)
    return AutoClientCore(v2, lambda: LegacyClient(auto=auto, client_id=client_id,
                                                   local_cidr=local,
                                                   key=codec.derive_key(passphrase)))

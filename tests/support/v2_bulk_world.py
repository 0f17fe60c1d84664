"""A v2 server (or the two-protocol mux) and v2 clients that take BULK,
wired in memory, with TSO super-packets as a TUN would hand them over:
the world of the BULK tests (tests/unit/test_v2_bulk.py) and of the fuzz
test of the cores (tests/unit/test_v2_core_fuzz.py)."""

import ipaddress
import struct

from camex.base import netpkt
from camex.daemon.config import parse_config
from camex.tunnel.server import ServerMux
from camex.v2 import framing
from camex.v2.core import V2ClientCore, V2ServerCore

PW = b"bulk-global-secret"
CONF = """
[defaults]
gateway_ip = 10.0.0.1
[client C1]
local_cidr = 10.0.0.2/24
[client C2]
local_cidr = 10.0.0.3/24
[client L3]
local_cidr = 10.0.0.4/24
"""
A1, A2, A3 = ("192.0.2.1", 4001), ("192.0.2.2", 4002), ("192.0.2.3", 4003)
MSS = 1398


def tcp_super(src, dst, payload_len, seq=1000):
    """What a TSO TUN read returns: (VnetHdr, IPv4/TCP super-packet) with
    the pseudo-header sum in the TCP checksum field (NEEDS_CSUM)."""
    payload = bytes((i * 7 + seq) & 0xFF for i in range(payload_len))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 77, 5 << 4, 0x18, 502, 0, 0)
    total = 40 + payload_len
    ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, total, 0x1234, 0x4000, 64, 6, 0)
                   + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed)
    ip[10:12] = netpkt.ip_checksum(ip).to_bytes(2, "big")
    p = bytearray(ip + tcp + payload)
    p[36:38] = (netpkt.pseudo4(p, 6, total - 20) % 0xFFFF).to_bytes(2, "big")
    hdr = netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, netpkt.GSO_TCPV4, 40, MSS, 20, 16))
    return hdr, memoryview(bytes(p))


class World:
    """A v2 server (optionally the mux with legacy) and clients, wired in memory."""

    def __init__(self, mux=False, local_delivery=False, relay_other=None, conf=CONF):
        self.now = 100.0
        cfg = parse_config(conf)
        if mux:
            self.mux = ServerMux(passphrase=PW, encrypt=True, config=cfg)
            self.server = self.mux.v2
            self.entry = self.mux
        else:
            self.server = V2ServerCore(global_passphrase=PW, config=cfg,
                                       local_delivery=local_delivery, relay_other=relay_other)
            self.entry = self.server
        self.clients = {}
        self.drop = None     # callable(datagram, addr) -> True to lose it on the way

    def add(self, addr, core):
        self.clients[addr] = core
        core.start(self.now)
        core.connected(self.now)
        self.pump()
        return core

    def pump(self):
        for _ in range(10):
            moved = False
            for addr, c in self.clients.items():
                out, c.to_net[:] = framing.datagrams_of(c.to_net), []
                for d in out:
                    moved = True
                    if self.drop is None or not self.drop(d, addr):
                        self.entry.datagram_received(d, addr, self.now)
            # (a BULK frame is one gso.Run in an outbox: its datagrams travel)
            out, self.entry.outbox[:] = [(x, a) for d, a in self.entry.outbox
                                         for x in framing.datagrams_of((d,))], []
            for d, addr in out:
                moved = True
                if addr in self.clients:
                    self.clients[addr].datagram_received(d, self.now)
            if not moved:
                return


def v2(cid, monkeypatch=None, bulk_on=True):
    if monkeypatch is not None:
        monkeypatch.setenv("CAMEX_FASTPATH", "" if bulk_on else "nobulk")
    c = V2ClientCore(auto=True, passphrase=PW, client_id=cid)
    if monkeypatch is not None:
        monkeypatch.delenv("CAMEX_FASTPATH")
    return c


def frame(c, hdr_pkt):
    c.tun_super(*hdr_pkt, 0.0)
    out, c.to_net[:] = framing.datagrams_of(c.to_net), []
    return out

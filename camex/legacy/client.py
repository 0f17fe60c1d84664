"""The legacy-protocol client, free of I/O.

Inputs: `start`/`connected` (a fresh socket to the server exists),
`datagram_received`, `tun_packet`, `on_timer`, each with the current time.
Outputs: `to_net` (datagrams for the server), `to_tun` (packets for the
TUN device) and `events` (interface configuration, reconnect requests),
drained by the event loop after every call.

Timers follow the legacy client so that a C server sees nothing new:
REGISTER at start, every 30 s and after every reconnect; in auto mode every
5 s until a CONFIG arrives; a new socket after 20 s without a datagram from
the server. Unlike the C client, the replay window is kept per server
sender prefix, so a restarted server (new prefix, counter from 0) is
accepted at once (flaw 5 in docs/LEGACY.md).
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter, OrderedDict

from ..base.contract import ClientCoreBase, PlainReceiver
from . import codec
# What this core shares with the v2 core and the daemons (kept importable
# from here: tests and tools name them by this module).
from .ifconfig import PATH_MTU, IfConfig, Reconnect, admit, default_mtu  # noqa: F401
from .seqfloor import SeqFloor
from ..base.log import LOG, Throttle
from ..base.replay import ReplayWindow

REGISTER_INTERVAL = 30.0
REGISTER_RETRY = 5.0  # auto mode, until the first CONFIG
SILENCE_RECONNECT = 20.0
PREFIX_WINDOWS = 8  # server prefixes remembered, so old ones stay replay-checked
class LegacyClient(ClientCoreBase):
    """The legacy client core (camex.base.contract.ClientCore; no BULK)."""

    def __init__(self, *, auto: bool, client_id: str | None = None,
                 local_cidr=None, gateway=None, routes=(), mtu: int | None = None,
                 key: bytes | None = None, rng=os.urandom, seq_floor: SeqFloor | None = None):
        seq_floor = SeqFloor() if seq_floor is None else seq_floor
        if not auto and local_cidr is None:
            raise ValueError("a manual client needs its local address")
        self.auto = auto
        self.client_id = client_id
        self.local_cidr = local_cidr
        self.gateway = gateway
        self.routes = list(routes)
        self.mtu_override = mtu
        self.outer_v6 = False   # the server is reached over IPv6 (outer_family)
        self.offered_mtu = None  # auto: the MTU of the last CONFIG
        # cryptography only with a key (codec.new_aead): a plaintext client never loads it.
        self.aead = codec.new_aead(key) if key else None
        self.tx_prefix = rng(4)
        # From the wall clock (ns), not 0: a server that keeps its window
        # across our restart (the C server) still takes us, and a nonce
        # never repeats unless the clock stepped back (flaw 6).
        self.tx_seq = seq_floor.start() if key else 0
        self.windows: OrderedDict = OrderedDict()
        self.to_net: list = []
        self.to_tun: list = []
        self.events: list = []
        self.drops: Counter = Counter()
        self.throttle = Throttle()
        self.config: IfConfig | None = None
        self.last_rx: float | None = None
        self.last_register = -1e9
        self.last_data_tx: float | None = None
        self.connected_at = 0.0
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0
        self.datagram_received = PlainReceiver(self._datagram_received)

    # ------------------------------------------------------- lifecycle

    def start(self, now: float) -> None:
        """Before the first socket: a manual client configures its TUN now."""
        if not self.auto:
            self._configure(IfConfig(self.local_cidr, self._mtu(None), self.gateway,
                                     list(self.routes)))

    def outer_family(self, ipv6: bool) -> None:
        """The daemon's socket to the server is IPv6 (True) or IPv4: the
        default MTU follows (20 bytes more of outer header over IPv6)."""
        if ipv6 == self.outer_v6:
            return
        self.outer_v6 = ipv6
        cfg = self.config
        if cfg is not None:
            self._configure(IfConfig(cfg.address, self._mtu(self.offered_mtu), cfg.gateway,
                                     cfg.routes))

    def connected(self, now: float) -> None:
        """A new socket to the server exists: register on it."""
        self.connected_at = now
        self.last_rx = None
        self._register(now)

    def _mtu(self, offered):
        if self.mtu_override:
            return self.mtu_override
        room = default_mtu(self.aead is not None, self.outer_v6)
        if offered:
            # A server's MTU=1500 names the link, not what is left of it
            # (flaw 7): never more than fits a 1500-byte path with our
            # overhead, or full-size packets fragment (or, with DF/GSO,
            # do not leave at all). -t still sets any MTU.
            return min(offered, room)
        return room

    def _configure(self, cfg: IfConfig) -> None:
        if cfg != self.config:
            self.config = cfg
            self.events.append(cfg)

    def _register(self, now: float) -> None:
        self.last_register = now
        if self.auto:
            msg = codec.register_auto(self.client_id or "")
        else:
            msg = codec.register_manual(str(self.local_cidr.ip))
        self._send(codec.T_REGISTER, msg)

    # ------------------------------------------------------------ send

    def _send(self, ptype: int, payload) -> None:
        if self.aead is not None:
            out = codec.seal(self.aead, ptype, self.tx_prefix, self.tx_seq, payload)
            self.tx_seq += 1
        else:
            out = bytes(payload)
        self.to_net.append(out)

    def tun_packet(self, packet, now: float) -> None:
        """A packet read from the TUN: only IPv4 crosses the legacy tunnel."""
        if not admit(self, packet):
            return
        self.tx_packets += 1
        self.tx_bytes += len(packet)
        self.last_data_tx = now
        self._send(codec.T_DATA, packet)

    # --------------------------------------------------------- receive

    def _datagram_received(self, data, now: float) -> None:
        if self.aead is None:
            # IPv4 data starts 0x45: the byte test spares the call.
            if data and data[0] == 0x43 and codec.is_control(data):
                self._control(data, now)
                return
            if len(data) < 20 or data[0] >> 4 != 4:
                self.drops["malformed"] += 1
                return
            self.last_rx = now
            self._deliver(data)
            return
        try:
            hdr = codec.parse_header(data)
        except codec.CodecError:
            self.drops["malformed"] += 1
            return
        window = self.windows.get(hdr.prefix)
        if window is not None and not window.check(hdr.seq):
            self.drops["replay"] += 1
            return
        try:
            plaintext = codec.open_datagram(self.aead, data, hdr)
        except codec.InvalidTag:
            self.drops["auth"] += 1
            self.throttle.warning("auth", "dropped a datagram from the server that "
                                  "does not authenticate (passphrase mismatch?)")
            return
        if window is None:
            # A new server sender prefix: the server restarted or gave us a
            # new entry. Start a window for it; remember a few old ones.
            window = self.windows[hdr.prefix] = ReplayWindow(64)
            if len(self.windows) > PREFIX_WINDOWS:
                self.windows.popitem(last=False)
        else:
            self.windows.move_to_end(hdr.prefix)
        window.update(hdr.seq)
        self.last_rx = now
        if hdr.type == codec.T_DATA:
            self._deliver(plaintext)
        elif hdr.type == codec.T_CONFIG:
            self._control(plaintext, now)
        else:
            self.drops["unexpected-type"] += 1

    def _deliver(self, packet) -> None:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self.drops["not-ipv4"] += 1
            return
        self.rx_packets += 1
        self.rx_bytes += len(packet)
        self.to_tun.append(packet)

    def _control(self, data, now: float) -> None:
        try:
            msg = codec.parse_control(data)
        except codec.CodecError as e:
            self.drops["malformed"] += 1
            self.throttle.warning("control", "ignored a malformed control message: %s", e)
            return
        if msg.verb != "CONFIG" or not self.auto:
            self.drops["unexpected-control"] += 1
            return
        self.last_rx = now
        try:
            cfg = self._parse_config(msg)
        except ValueError as e:
            self.throttle.warning("config", "ignored a CONFIG from the server: %s", e)
            return
        if self.config is None:
            LOG.info("received configuration: %s, gateway %s, mtu %d, %d route(s)",
                     cfg.address, cfg.gateway, cfg.mtu, len(cfg.routes))
        elif cfg != self.config:
            LOG.info("configuration changed: %s, gateway %s, mtu %d, %d route(s)",
                     cfg.address, cfg.gateway, cfg.mtu, len(cfg.routes))
        self._configure(cfg)

    def _parse_config(self, msg) -> IfConfig:
        cid = msg.get("CLIENT_ID")
        if cid is not None and cid.lower() != (self.client_id or "").lower():
            raise ValueError(f"it is for client {cid!r}")
        local, gw = msg.get("LOCAL_CIDR"), msg.get("GATEWAY_IP")
        if not local or not gw:
            raise ValueError("LOCAL_CIDR and GATEWAY_IP are required")
        try:
            address = ipaddress.IPv4Interface(local)
            gateway = ipaddress.IPv4Address(gw)
            routes = [ipaddress.IPv4Network(r, strict=False)
                      for r in msg.get_all("ROUTE_CIDR")[:codec.MAX_ROUTES]]
        except ValueError as e:
            raise ValueError(str(e)) from None
        mtu = msg.get("MTU")
        if mtu is not None:
            if not mtu.isdigit() or not codec.MIN_MTU <= int(mtu) <= codec.MAX_MTU:
                raise ValueError(f"MTU {mtu!r} is outside {codec.MIN_MTU}..{codec.MAX_MTU}")
            mtu = int(mtu)
        self.offered_mtu = mtu
        return IfConfig(address, self._mtu(mtu), gateway, routes + [
            r for r in self.routes if r not in routes])

    # ---------------------------------------------------------- timers

    def _silent_since(self) -> float:
        return self.last_rx if self.last_rx is not None else self.connected_at

    def _next_register(self) -> float:
        if self.auto and self.config is None:
            return self.last_register + REGISTER_RETRY
        silent_since = self._silent_since()
        if self.last_data_tx is not None and self.last_data_tx > silent_since:
            # We send and hear nothing back: the server may have restarted
            # and forgotten us. Register again in 5 s rather than 30 s (a C
            # server ignores REGISTERs closer than 5 s, harmlessly).
            return max(self.last_register, silent_since) + REGISTER_RETRY
        return self.last_register + REGISTER_INTERVAL

    def next_deadline(self) -> float:
        return min(self._next_register(), self._silent_since() + SILENCE_RECONNECT)

    def on_timer(self, now: float) -> None:
        silent_since = self._silent_since()
        if now - silent_since >= SILENCE_RECONNECT:
            self.events.append(Reconnect(f"nothing from the server for "
                                         f"{now - silent_since:.0f} s"))
            # The loop calls connected() once it has the new socket.
            self.connected_at = now
            self.last_rx = None
            return
        if now >= self._next_register():
            self._register(now)

"""v2 behind the interface of the legacy cores, for the daemons.

camex.daemon.client and camex.daemon.server drive a core through a small
surface (see camex/legacy/client.py and server.py): `datagram_received`,
`tun_packet`, `on_timer`, `next_deadline`, and the lists `to_net` /
`outbox`, `to_tun`, `events` that the loop drains. The classes here give
the v2 state machines that same surface:

- V2ClientCore: drop-in for LegacyClient (IfConfig events, no Reconnect:
  v2 roams, a new source port needs no new registration);
- AutoClientCore (camex.tunnel.client): `--protocol auto` on a client: v2 first, legacy after
  `fallback_after` seconds without any v2 answer, and back to v2 as soon as
  a v2 answer comes (it keeps probing every PROBE_INTERVAL). Once v2 has
  answered it never falls back (a dropped v2 datagram is not a downgrade);
- V2ServerCore: the v2 half of a server; the daemon hands it the datagrams
  whose first byte says v2 (wire.is_v2) and gives it `relay_other` to reach
  clients of the other protocol (and calls `deliver` the other way).
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter
from typing import Any, Callable, ClassVar

from ..base import netpkt
from ..base.endpoint import fmt, outer_ip_udp
from ..legacy.ifconfig import IfConfig, admit
from ..base.log import LOG, Throttle
from . import bulk, kdf, lone, wire
from .bulk import FastReceiver
from .events import Deliver, DeliverFrame, Down, Refused, Roamed, Send, Up
from .session import Timers, cipher_name

PATH_MTU = 1500
DEFAULT_MTU = PATH_MTU - 28 - wire.OVERHEAD   # 1438: one packet per datagram, unfragmented


def default_mtu(ipv6: bool = False) -> int:
    """1438 over IPv4, 1418 over IPv6 (40-byte IPv6 header)."""
    return PATH_MTU - outer_ip_udp(ipv6) - wire.OVERHEAD


def max_datagram(ipv6: bool = False) -> int:
    """The largest datagram (UDP payload) a 1500-byte path carries: 1472, 1452."""
    return PATH_MTU - outer_ip_udp(ipv6)
FALLBACK_AFTER = 3.0   # --protocol auto: seconds without a v2 answer before legacy
PROBE_INTERVAL = 30.0  # on legacy, how often to try v2 again
REJECT_REPORT_DELAY = 2.0  # wait this long before logging "no key opens it"
INF = float("inf")

def bulk_wanted() -> bool:
    """BULK unless CAMEX_FASTPATH names "nobulk" (or "off"): a switch for
    benchmarks and bug hunts, like the other fast-path parts."""
    return not netpkt.disabled("nobulk")


_ERRORS = {wire.ERR_UNKNOWN_CLIENT: "unknown client", wire.ERR_ADDRESS: "address refused",
           wire.ERR_CONFIG: "no configuration for this client", wire.ERR_REQUEST: "bad request"}


class V2ClientCore:
    """The v2 client core (camex.base.contract.ClientCore)."""

    protocol = "v2"
    bulk: ClassVar[bool] = True
    # Chosen at construction (CAMEX_FASTPATH=nolone: the full paths only):
    # the flat lone-packet paths of camex.v2.lone, or the full ones.
    datagram_received: FastReceiver
    tun_packet: Callable[[Any, float], None]

    def __init__(self, *, auto: bool, passphrase: bytes, client_id: str | None = None,
                 local_cidr=None, gateway=None, routes=(), mtu: int | None = None,
                 keepalive: float = 25.0, rng=os.urandom, keylog=None,
                 timers: Timers | None = None, local_cidr6=None, gateway6=None,
                 ipv6: bool = True, aes: bool = False):
        if not auto and local_cidr is None and local_cidr6 is None:
            raise ValueError("a manual client needs its local address")
        if not passphrase:
            raise ValueError("v2 needs a passphrase")
        self.auto = auto
        self.client_id = client_id
        self.local_cidr = local_cidr
        self.gateway = gateway
        self.routes = list(routes)
        self.mtu_override = mtu
        # IPv6 inside the tunnel: False where the TUN cannot carry it
        # (camex.ko): the IPv6 address, gateway and routes are then left out.
        self.ipv6 = ipv6
        self.local_cidr6 = local_cidr6 if ipv6 else None
        self.gateway6 = gateway6 if ipv6 else None
        if not ipv6:
            self.routes = [r for r in self.routes if r.version == 4]
        self._v1_server_said = False
        self.outer_v6 = False   # the server is reached over IPv6 (outer_family)
        self.offered_mtu = None  # auto: the MTU the server's grant named
        t = timers or Timers()
        t.keepalive = keepalive
        request = wire.Request(auto=auto, local_cidr=None if auto else local_cidr,
                               mtu=None if auto else mtu,
                               features=(wire.FEATURE_BULK if bulk_wanted() else 0)
                               | (wire.FEATURE_AES256GCM if aes else 0),
                               local_cidr6=None if auto else self.local_cidr6,
                               version=wire.PAYLOAD_VERSION if ipv6 else wire.PAYLOAD_V1)
        # Each role's session module is imported by the core of that role
        # only: a client daemon does without camex.v2.server (0.2 MiB
        # resident), a server without camex.v2.client.
        from .client import ClientSession

        # scrypt, once: the own-section key and the global one.
        self.session = ClientSession(kdf.client_candidates(passphrase, client_id or None),
                                     client_id or "", request, timers=t, rng=rng,
                                     keylog=keylog)
        self.to_net: list = []
        self.to_tun: list = []
        self.events: list = []
        self.drops: Counter = Counter()
        self.throttle = Throttle()
        self.config: IfConfig | None = None
        self.started = False
        self.last_rx: float | None = None
        self.last_register = -1e9     # time of the last handshake start (status)
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0
        # Middle fragments of a BULK frame are stored before anything else.
        flat = not netpkt.disabled("nolone")   # CAMEX_FASTPATH=nolone: full paths only
        # A whole BULK frame of a steady stream: one Python call
        # (CAMEX_FASTPATH=noframe: the full path, as below).
        framed = flat and not netpkt.disabled("noframe")
        self.frame_received = lone.client_frame_receiver(self) if framed \
            else self._frame_received
        self.datagram_received = bulk.FastReceiver(
            self.session.frames,
            lone.client_receiver(self) if flat else self._datagram_received,
            self.frame_received)
        if flat:   # a lone DATA datagram: one Python call (else as above)
            self.datagram_received.one = lone.client_receiver(
                self, self.datagram_received.__call__)
        self.tun_packet = lone.client_sender(self) if flat else self._tun_packet
        # A TCP stream's super-packet sealed whole in one call (the daemon
        # tries it first; CAMEX_FASTPATH=noframe: tun_super only).
        self.tun_frame = lone.client_frame(self) if framed else None

    # ------------------------------------------------------- lifecycle

    def drop_ipv6(self) -> None:
        """No IPv6 inside the tunnel from now on (a TUN that cannot carry
        it: camex.ko); before start(). The handshake asks as a payload-1
        client, so the server grants IPv4 only."""
        self.ipv6 = False
        self.local_cidr6 = self.gateway6 = None
        self.routes = [r for r in self.routes if r.version == 4]
        req = self.session.request
        req.local_cidr6, req.version = None, wire.PAYLOAD_V1

    def start(self, now: float) -> None:
        if not self.auto:
            self._configure(IfConfig(self.local_cidr, self._mtu(), self.gateway,
                                     list(self.routes),
                                     address6=self.local_cidr6, gateway6=self.gateway6))

    def _mtu(self) -> int:
        # As the legacy client does (flaw 7): an offered MTU never exceeds
        # what fits a 1500-byte path with the outer headers and the v2
        # overhead; -t sets any MTU.
        room = default_mtu(self.outer_v6)
        return self.mtu_override or (min(self.offered_mtu, room) if self.offered_mtu else room)

    def outer_family(self, ipv6: bool) -> None:
        """The daemon's socket to the server is IPv6 (True) or IPv4: the
        datagram size and the default MTU follow (20 bytes less over IPv6)."""
        if ipv6 == self.outer_v6:
            return
        self.outer_v6 = ipv6
        self.session.set_max_datagram(max_datagram(ipv6))
        cfg = self.config
        if cfg is not None:
            self._configure(IfConfig(cfg.address, self._mtu(), cfg.gateway, cfg.routes,
                                     address6=cfg.address6, gateway6=cfg.gateway6))

    def connected(self, now: float) -> None:
        """A socket to the server exists. The first time: handshake. Later
        (a new socket): nothing to do, the server follows our new port after
        our next authenticated packet."""
        if not self.started:
            self.started = True
            self.last_register = now
            self._handle(self.session.start(now))

    def close(self, now: float) -> None:
        """Before exiting: an authenticated CLOSE frees our address at once."""
        self.to_net.extend(self.session.close(now))

    # ------------------------------------------------------- data path

    def _tun_packet(self, packet, now: float) -> None:
        if not admit(self, packet):
            return
        self.tx_packets += 1
        self.tx_bytes += len(packet)
        before = self.session.handshaking
        self.to_net.extend(self.session.encrypt((packet,), now))
        if self.session.handshaking and not before:
            self.last_register = now

    @property
    def bulk_ready(self) -> bool:
        """The daemon hook: while True, TSO is on and super-packets come to
        tun_super() whole (docs/PROTOCOL.md §4.7)."""
        return self.session.bulk_ready and not (self.auto and self.config is None)

    def tso_max(self) -> int:
        """The daemon hook: the TUN's TSO size limit (wire.bulk_tso_max)."""
        return wire.bulk_tso_max(self.session.max_datagram)

    def accept_bulk(self, on: bool) -> None:
        """Announce FEATURE_BULK from the next handshake on, or not. For the
        daemon once its TUN is open: a TUN without a virtio-net header
        (camex.ko, old kernels) would have every received super-packet cut
        in Python, dearer than per-packet DATA; such a client asks for DATA."""
        req = self.session.request
        if on and bulk_wanted():
            req.features |= wire.FEATURE_BULK
        else:
            req.features &= ~wire.FEATURE_BULK

    bulk_tx_frames = property(lambda self: self.session.stats["bulk_tx"])
    bulk_rx_frames = property(lambda self: self.session.stats["bulk_rx"])

    def counters(self) -> dict:
        """BULK frames each way, handshakes and when the session in use
        began, and what the session refused (replays, forgeries aimed at
        us: "v2-" keys) - for `camex status`."""
        stats = self.session.stats
        current = self.session.current
        out = {"bulk_tx_frames": stats["bulk_tx"], "bulk_rx_frames": stats["bulk_rx"],
               "handshakes": stats["handshakes"],
               "session_created": current.created if current is not None else None,
               "cipher": cipher_name(current.send_key) if current is not None else None}
        for k in ("replay", "forged", "stale", "malformed"):
            if stats.get(k):
                out[f"v2-{k}"] = stats[k]
        return out

    def tun_super(self, hdr, packet, now: float) -> None:
        """A TSO read (VnetHdr, IPv4 or TCPv6 super-packet): one BULK
        frame, or cut into packets for DATA if BULK cannot carry it right
        now."""
        rec = bulk.record_of(hdr, packet)
        dgrams = self.session.encrypt_frame((rec,), now) if rec is not None else None
        if dgrams is None:
            for p in bulk.segments(hdr[3], packet) if rec is not None else ():
                self._tun_packet(p, now)
            if rec is None:
                self.drops["not-super-packet"] += 1
            return
        self.tx_packets += bulk.segment_count(rec[0], packet)
        self.tx_bytes += len(packet)
        self.to_net.extend(dgrams)

    def _datagram_received(self, data, now: float) -> None:
        if not wire.is_v2(data):
            self.drops["not-v2"] += 1
            return
        self._handle(self.session.receive(data, now))
        s = self.session.current
        if s is not None and s.last_received == now:
            self.last_rx = now

    def _frame_received(self, first, ciphertext, now: float) -> None:
        """A whole BULK frame from one GRO read (bulk.FastReceiver)."""
        self._handle(self.session.receive_frame(first, ciphertext, now))
        s = self.session.current
        if s is not None and s.last_received == now:
            self.last_rx = now

    def next_deadline(self) -> float:
        t = self.session.next_timer()
        return INF if t is None else t

    def on_timer(self, now: float) -> None:
        before = self.session.stats["inits"]
        self._handle(self.session.on_timer(now))
        if self.session.stats["inits"] != before:
            self.last_register = now

    # ---------------------------------------------------------- events

    def _handle(self, events) -> None:
        for ev in events:
            if isinstance(ev, Send):
                self.to_net.append(ev.data)
            elif isinstance(ev, Deliver):
                for p in ev.packets:
                    if len(p) < 20 or p[0] >> 4 != 4 and not (
                            p[0] >> 4 == 6 and len(p) >= 40 and self.config is not None
                            and self.config.address6 is not None):
                        self.drops["not-ipv4"] += 1   # (nor IPv6 on an IPv6 interface)
                        continue
                    self.rx_packets += 1
                    self.rx_bytes += len(p)
                    self.to_tun.append(p)
            elif isinstance(ev, DeliverFrame):
                six = self.config is not None and self.config.address6 is not None
                for g, p in ev.records:
                    items = bulk.tun_items(g, p) if p[0] >> 4 == 4 or six else None
                    if items is None:
                        self.drops["not-ipv4"] += 1   # IPv6, as for DATA above
                        continue
                    if not items:
                        self.drops["bad-record"] += 1
                        continue
                    self.rx_packets += bulk.segment_count(g, p)
                    self.rx_bytes += len(p)
                    self.to_tun.extend(items)
            elif isinstance(ev, Up):
                self._up(ev.config)
            elif isinstance(ev, Down):
                LOG.info("v2 session lost (%s); handshaking again", ev.reason)
            elif isinstance(ev, Refused):
                self.throttle.log(40, "refused", "the server refused us: %s%s",
                                  _ERRORS.get(ev.code, f"error {ev.code}"),
                                  f" ({ev.message})" if ev.message else "")

    def _up(self, cfg) -> None:
        LOG.info("v2 session up with the server")
        if not self.auto:
            if self.local_cidr6 is not None and (cfg is None or cfg.version < wire.PAYLOAD_VERSION):
                # An older server skipped our IPv6 address (docs/PROTOCOL.md
                # §4.6, "Versions"): it would relay nothing to it.
                if not self._v1_server_said:
                    self._v1_server_said = True
                    LOG.warning("the server does not carry IPv6 inside the tunnel (handshake "
                                "payload version 1): %s and the IPv6 routes are not used",
                                self.local_cidr6)
                self._configure(IfConfig(self.local_cidr, self._mtu(),
                                         self.gateway, [r for r in self.routes if r.version == 4]))
            return
        four = cfg is not None and cfg.local_cidr is not None and cfg.gateway_ip is not None
        six = self.ipv6 and cfg is not None and cfg.local_cidr6 is not None \
            and cfg.gateway_ip6 is not None
        if not four and not six:
            self.throttle.warning("config", "the server sent no usable configuration")
            return
        self.offered_mtu = cfg.mtu
        mtu = self._mtu()
        routes = list(cfg.routes) + [r for r in self.routes if r not in cfg.routes]
        routes = [r for r in routes if (r.version == 4 and four) or (r.version == 6 and six)]
        self._configure(IfConfig(cfg.local_cidr if four else None, mtu,
                                 cfg.gateway_ip if four else None, routes,
                                 address6=cfg.local_cidr6 if six else None,
                                 gateway6=cfg.gateway_ip6 if six else None))

    def _configure(self, cfg: IfConfig) -> None:
        if cfg != self.config:
            self.config = cfg
            self.events.append(cfg)

    @property
    def established(self) -> bool:
        return self.session.established


class V2ServerCore:
    """The v2 half of a server, with LegacyServer's surface."""

    # Chosen at construction: camex.v2.lone's flat paths, or the full ones
    # only (CAMEX_FASTPATH=nolone). `seal_lone`: the flat seal of a lone
    # packet for a peer (relays), or None.
    seal_lone: Callable[[Any, Any, float], bool] | None = None
    datagram_received: FastReceiver
    receive_whole: Callable[[Any, Any, float], None]   # past the fragment fast path
    frame_received: Callable[[Any, Any, Any, float], None]   # (fragment 0, ciphertext, addr, now)
    deliver: Callable[[Any, float], bool]   # a packet to the v2 client of its destination
    tun_packet: Callable[..., None]         # (packet, now=None): from the server's TUN

    def __init__(self, *, global_passphrase: bytes | None, config=None,
                 local_delivery: bool = False, relay_other=None, behind_for=None,
                 rng=os.urandom, keylog=None, timers: Timers | None = None,
                 load_threshold: int | None = None, max_clients: int | None = None,
                 server_interfaces=(), keys: kdf.KeyStore | None = None,
                 aes: bool = False):
        # `keys`: the passphrases' key store, if already derived (scrypt).
        self.local_delivery = local_delivery
        # The server TUN's own address (-l of --server-tun): never a client's.
        self.server_interfaces = tuple(server_interfaces)
        self.refusals: Counter = Counter()   # INITs refused by the address policy, by reason
        self.relay_other = relay_other     # (packet) -> bool: a client of the other protocol took it
        self.other_holds: Callable[[bytes], bool] | None = None   # (dst 4 bytes) -> bool: would relay_other take it?
        self.behind_for = behind_for or _behind_from_profile
        self.config = config
        self.outbox: list = []
        self.to_tun: list = []
        self.drops: Counter = Counter()
        self.throttle = Throttle(rate=2, burst=10)  # per sender, forged sources bounded
        kw = {} if load_threshold is None else {"load_threshold": load_threshold}
        if max_clients is not None:
            kw["max_peers"] = max_clients
        from .server import V2Server  # see V2ClientCore.__init__

        if keys is None:
            keys = self._keystore(global_passphrase, config)
        self.server = V2Server(keys, self._authorize,
                               rng=rng, keylog=keylog, timers=timers, bulk=bulk_wanted(),
                               aes=aes, **kw)
        self._set_policy(config)
        self.server.on_spoofed = self._spoofed
        # Middle fragments of a BULK frame are stored before anything else;
        # `receive_whole` takes every other datagram (ServerMux, which puts
        # the same fast path in front of both protocols, calls it directly).
        flat = self.flat = not netpkt.disabled("nolone")   # CAMEX_FASTPATH=nolone: full paths only
        self.receive_whole = lone.server_receiver(self) if flat else self._datagram_received
        # A whole BULK frame from one GRO read (bulk.FastReceiver; the
        # ServerMux calls it too): a frame of a steady stream in one call.
        # CAMEX_FASTPATH=noframe: this one off alone, to measure it.
        self.frame_received = lone.server_frame(self) if flat and not netpkt.disabled("noframe") \
            else self._frame_received
        self.datagram_received = bulk.FastReceiver(self.server.frames, self.receive_whole,
                                                   self.frame_received)
        if flat:
            # A lone DATA datagram: one Python call (else as above).
            self.datagram_received.one = lone.server_receiver(
                self, self.datagram_received.__call__)
            self.seal_lone = lone.server_sealer(self)
            self.deliver = lone.server_sender(self, self.seal_lone)
            self.tun_packet = lone.server_tun(self, self.seal_lone)
        else:
            self.deliver = self._deliver
            self.tun_packet = self._tun_packet
        self.now = 0.0
        # Source addresses whose INIT no key opened, waiting to be reported:
        # a client offers one INIT per candidate key (kdf.client_candidates)
        # and one of them failing is normal if the other one is answered.
        self._rejected: dict = {}
        self._answered: dict = {}   # address -> time of the last RESP/COOKIE sent there

    @staticmethod
    def _keystore(global_passphrase, config):
        return kdf.server_keys(global_passphrase, config)

    def _set_policy(self, config) -> None:
        from .server import V6
        # Here, not at the top: a client core has no address policy.
        from ..base.addrpolicy import AddressPolicy

        self.policy = AddressPolicy.from_config(config, self.server_interfaces)
        # The relay's test (V2Server.route): the server's IPv4 addresses as
        # the integers its address table is keyed by.
        self.server.reserved = frozenset(
            int.from_bytes(p, "big") | (V6 if len(p) == 16 else 0)
            for p in self.policy.server_packed)

    def _authorize(self, client_id: str, request: wire.Request):
        from .server import Grant, grant_for

        profile = self.config.profile_for(client_id) if (self.config and client_id) else None
        grant = grant_for(request, profile, self.behind_for(profile))
        if isinstance(grant, Grant):
            for a in grant.addresses:
                denied = self.policy.check(a, (client_id or "").lower() or None)
                if denied is not None:
                    self.refusals[denied.reason] += 1
                    return wire.Refusal(wire.ERR_ADDRESS, denied.message)
        return grant

    # ------------------------------------------------------------- I/O

    def _frame_received(self, first, ciphertext, addr, now: float) -> None:
        """A whole BULK frame from one GRO read, the full path
        (`frame_received`: this, or the flat path in front of it)."""
        self.now = now
        self._handle(self.server.receive_frame(first, ciphertext, addr, now), now)

    def _datagram_received(self, data, addr, now: float) -> None:
        self.now = now
        stats = self.server.stats
        bad = stats["bad_mac1"] + stats["no_key"]
        self._handle(self.server.receive(data, addr, now), now)
        if stats["bad_mac1"] + stats["no_key"] != bad:
            self.drops["no-key"] += 1
            if now - self._answered.get(addr, -INF) > REJECT_REPORT_DELAY \
                    and len(self._rejected) < 1024:
                self._rejected.setdefault(addr, now)

    def _tun_packet(self, packet, now: float | None = None) -> None:
        """A packet from the server's own TUN (`tun_packet`: this, or the
        flat path in front of it)."""
        if not self.deliver(packet, self.now if now is None else now):
            self.drops["no-route"] += 1

    def _deliver(self, packet, now: float) -> bool:
        """Send an IPv4 or IPv6 packet to the v2 client owning its
        destination; False if there is none (the caller tries elsewhere)."""
        if len(packet) < 20:
            return False
        v = packet[0] >> 4
        if v == 4:
            peer = self.server.route(bytes(packet[16:20]))
        elif v == 6 and len(packet) >= 40:
            peer = self.server.route6(bytes(packet[24:40]))
        else:
            return False
        if peer is None:
            return False
        self.outbox.extend(self.server.send(peer, (packet,), now))
        return True

    @property
    def bulk_ready(self) -> bool:
        """The daemon hook (server TUN): TSO on while some client takes BULK."""
        return self.server.bulk_peers > 0

    def tso_max(self) -> int:
        """The daemon hook: the server TUN's TSO size limit (wire.bulk_tso_max)."""
        return wire.bulk_tso_max(self.server.max_datagram)

    def tun_super(self, hdr, packet, now: float | None = None) -> bool:
        """A TSO read of the server's TUN: one BULK frame to the v2 client
        owning its destination; False if no such client takes BULK (the
        caller cuts the super-packet into packets)."""
        rec = bulk.record_of(hdr, packet)
        if rec is None:
            return False
        peer = self.server.route(bytes(packet[16:20])) if packet[0] >> 4 == 4 \
            else self.server.route6(bytes(packet[24:40]))
        if peer is None:
            return False
        pairs = self.server.send_frame(peer, (rec,), self.now if now is None else now)
        if pairs is None:
            return False
        self.outbox.extend(pairs)
        return True

    def next_deadline(self) -> float:
        t = self.server.next_timer()
        t = INF if t is None else t
        if self._rejected:
            t = min(t, min(self._rejected.values()) + REJECT_REPORT_DELAY)
        return t

    def on_timer(self, now: float) -> None:
        self.now = now
        self._handle(self.server.on_timer(now), now)
        for addr, t in list(self._rejected.items()):
            if now - t >= REJECT_REPORT_DELAY:
                del self._rejected[addr]
                self.throttle.warning(("nokey", addr[0]), "rejected a v2 handshake from %s: no key "
                                   "opens it", fmt(addr))

    def reload(self, config, global_passphrase: bytes | None, now: float | None = None) -> None:
        now = self.now if now is None else now
        self.config = config
        self._set_policy(config)
        self._handle(self.server.reload(self._keystore(global_passphrase, config),
                                        self._authorize, now), now)

    def close(self, now: float) -> None:
        self._handle(self.server.close(now), now)

    # ---------------------------------------------------------- events

    def _handle(self, actions, now: float) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.outbox.append((a.data, a.addr))
                if a.data[1] in (wire.T_RESP, wire.T_COOKIE):
                    self._rejected.pop(a.addr, None)   # another candidate key worked
                    if len(self._answered) > 4096:
                        self._answered.clear()
                    self._answered[a.addr] = now
            elif isinstance(a, Deliver):
                for p in a.packets:
                    self._relay(p, a.peer, now)
            elif isinstance(a, DeliverFrame):
                self._relay_frame(a.records, a.peer, now, a.plain)
            elif isinstance(a, Up):
                LOG.info("client %s registered (v2, %s)", a.peer.describe(),
                         "auto" if a.peer.request.auto else "manual")
            elif isinstance(a, Down):
                LOG.info("client %s gone (v2): %s", a.peer.describe(), a.reason)
            elif isinstance(a, Roamed):
                self.throttle.info(("roam", a.peer.key), "client %s moved from %s",
                                   a.peer.describe(), fmt(a.old))

    def _relay(self, packet, src, now: float) -> None:
        if packet[0] >> 4 != 4:    # (allows_source let IPv4 and IPv6 through)
            return self._relay6(packet, src, now)
        dst = self.server.route(bytes(packet[16:20]))
        if dst is src:
            self.drops["no-route"] += 1
        elif dst is not None:
            seal = self.seal_lone
            if seal is None or not seal(dst, packet, now):
                self.outbox.extend(self.server.send(dst, (packet,), now))
        elif self.relay_other is not None and self.relay_other(packet):
            pass
        elif self.local_delivery:
            self.to_tun.append(packet)
        else:
            self.drops["no-route"] += 1

    def _spoofed(self, peer, packet) -> None:
        """A throttled line per client for inner packets whose source it
        does not own (counted by V2Server as `spoofed`)."""
        src = "?"
        if len(packet) >= 20 and packet[0] >> 4 == 4:
            src = str(ipaddress.IPv4Address(bytes(packet[12:16])))
        elif len(packet) >= 40 and packet[0] >> 4 == 6:
            src = str(ipaddress.IPv6Address(bytes(packet[8:24])))
        self.throttle.warning(("spoofed", peer.key), "dropped packets from client %s with "
                              "inner source %s, not its own", peer.describe(), src)

    def _relay6(self, packet, src, now: float) -> None:
        """An IPv6 packet of a v2 client: to the v2 client owning its
        destination, else the server TUN. Never to a legacy client (the
        legacy protocol carries IPv4 only): one whose IPv4 address the
        destination embeds (::ffff:a.b.c.d, ::a.b.c.d) is a counted drop."""
        dst = self.server.route6(bytes(packet[24:40]))
        if dst is not None and dst is not src:
            self.outbox.extend(self.server.send(dst, (packet,), now))
        elif dst is None:
            self._unrouted6(0, packet, src)
        else:
            self.drops["ipv6-no-route"] += 1

    def _unrouted6(self, g: int, packet, src) -> None:
        """An IPv6 packet or record (G > 0: a super-packet) that no v2
        client holds: the server TUN, else a counted drop - never a legacy
        client, and one whose IPv4 address the destination embeds
        (::ffff:a.b.c.d, ::a.b.c.d) is counted apart."""
        d = packet[24:40]
        holds = self.other_holds
        if holds is not None and d[:10] == bytes(10) and d[10:12] in (b"\xff\xff", b"\0\0") \
                and holds(bytes(d[12:16])):
            self.drops["ipv6-to-legacy"] += 1
            self.throttle.warning("v6-legacy", "dropped IPv6 packets from %s for a legacy "
                                  "client: the legacy protocol carries IPv4 only",
                                  src.describe())
        elif self.local_delivery:
            self.to_tun.extend(bulk.tun_items(g, packet) if g else (packet,))
        else:
            self.drops["ipv6-no-route"] += 1

    def _relay_frame(self, records, src, now: float, plain=None) -> None:
        """The records of a BULK frame, by destination: a v2 client that
        takes BULK gets them re-sealed as one frame (decrypted once,
        encrypted once; `plain`, the opened frame, is sealed as it is when
        all its records go there); one that takes DATA only, a legacy client or the
        server's TUN without offloads gets packets cut with full checksums."""
        server = self.server
        by_peer: dict = {}
        for g, p in records:
            four = p[0] >> 4 == 4
            dst = server.route(bytes(p[16:20])) if four else server.route6(bytes(p[24:40]))
            if dst is src:
                self.drops["no-route"] += 1
            elif dst is not None:
                lst = by_peer.get(dst)
                if lst is None:
                    by_peer[dst] = [(g, p)]
                else:
                    lst.append((g, p))
            elif not four:
                self._unrouted6(g, p, src)   # never to a legacy client
            elif self.relay_other is not None and self._relay_cut(g, p):
                pass
            elif self.local_delivery:
                self.to_tun.extend(bulk.tun_items(g, p))
            else:
                self.drops["no-route"] += 1
        whole = plain if len(by_peer) == 1 and len(records) == len(next(iter(
            by_peer.values()))) else None
        for dst, recs in by_peer.items():
            pairs = server.send_frame(dst, recs, now, whole)
            if pairs is None:
                pkts = [s for g, p in recs for s in bulk.segments(g, p)]
                pairs = server.send(dst, pkts, now)
            self.outbox.extend(pairs)

    def _relay_cut(self, g: int, packet) -> bool:
        """Cut a record for a client of the other protocol; False if none
        holds its destination (asked first: cutting costs ~15 us a segment)."""
        if not g:
            return self.relay_other(packet)
        holds = self.other_holds
        if holds is not None and not holds(bytes(packet[16:20])):
            return False
        segs = bulk.segments(g, packet)
        if not segs or not self.relay_other(segs[0]):
            return False
        for s in segs[1:]:
            self.relay_other(s)
        return True

    def status(self, now: float) -> list:
        out = []
        for p in self.server.peers.values():
            s = p.current
            out.append({
                "client_id": p.client_id or None,
                "address": str(p.grant.address),
                "addresses": [str(a) for a in p.grant.addresses],
                "endpoint": fmt(p.endpoint) if p.endpoint else None,
                "protocol": "v2",
                "mode": "auto" if p.request.auto else "manual",
                "session_age": round(now - s.created, 3) if s else None,
                "connected_for": round(now - p.since, 3) if p.since is not None else None,
                "restored": False,  # v2 sessions are not kept: clients handshake again
                "last_received_ago": round(now - s.last_received, 3) if s else None,
                "rx_packets": p.stats["rx"], "tx_packets": p.stats["tx"],
                "rx_bytes": p.stats["rx_bytes"], "tx_bytes": p.stats["tx_bytes"],
                "spoofed": p.stats["spoofed"],
                "bulk": p.bulk,
                "cipher": cipher_name(s.send_key) if s else None,
                "bulk_rx_frames": p.stats["bulk_rx"], "bulk_tx_frames": p.stats["bulk_tx"],
            })
        return out


def _behind_from_profile(profile) -> list:
    """Networks behind a client, if the configuration defines them (a
    `subnets` list on the profile); none otherwise."""
    nets = getattr(profile, "subnets", None) or []
    return [ipaddress.IPv4Network(n) for n in nets]

"""The client daemon: a TUN device, one UDP socket to the server, and the
client core between them. Reads are drained in batches and flushed in one
place, so that batching and offloads slot in without a rewrite."""

from __future__ import annotations

import errno
import functools
import os
import selectors
import socket
import time

from typing import Callable

from ..base import netpkt
from ..base.endpoint import canonical, fmt, fmt_host
from ..base.contract import ClientCore, Device, SuperPacket
from ..legacy.ifconfig import IfConfig, Reconnect
from ..io import gso, netlink, offload, udp
from ..v2.framing import Run
from .keylog import open_keylog
from ..legacy import codec
from ..base.log import LOG, Throttle, fault
from .procinfo import process_status
from ..io.tun import write_queued
from ..io.udp import BATCH
from .loop import BURST_GAP, RESOLVE_RETRY, TSO_CHECK_EVERY, Loop, StartupError
from .options import v2_timers, wants_aes

FLUSH_AT = 64  # datagrams/packets queued before a mid-batch flush (bounds memory)
# Send errors that say this socket's path is gone, not that a datagram was lost.
PATH_GONE = (errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EINVAL)
PATH_RECONNECT_EVERY = 1.0   # at most one new socket a second for them


def _backlog(to_tun) -> int:
    """Received packets waiting for the TUN; a BULK super-packet (up to
    64 KiB, written whole, one write each) counts as a full batch: holding
    many for one flush saves no syscall, only memory."""
    if to_tun and type(to_tun[-1]) is SuperPacket:
        return FLUSH_AT
    return len(to_tun)


def make_core(opts, client_id, key, keylog=None) -> ClientCore:
    """The client core for --protocol: legacy alone, v2 alone, or v2 with a
    legacy fallback (auto, when there is a passphrase for v2). `keylog`:
    callable(line) for v2 session keys (--keylog)."""
    def legacy():
        # The legacy protocol carries IPv4 only: its core gets the IPv4 part.
        # Imported here: a v2-only client never loads the legacy core.
        from ..legacy.client import LegacyClient
        return LegacyClient(auto=opts.auto, client_id=client_id, local_cidr=opts.local_cidr,
                            gateway=opts.gateway_ip, mtu=opts.mtu, key=key,
                            routes=[r for r in opts.routes if r.version == 4])

    if opts.protocol == "legacy" or not opts.psk:
        return legacy()
    # v2 (Noise, X25519, its modules: ~0.7 MiB) only for a client that may speak it.
    from ..v2.core import V2ClientCore
    v2 = V2ClientCore(auto=opts.auto, passphrase=opts.psk, client_id=client_id,
                      local_cidr=opts.local_cidr, gateway=opts.gateway_ip, routes=opts.routes,
                      mtu=opts.mtu, keepalive=opts.keepalive, timers=v2_timers(opts),
                      keylog=keylog, local_cidr6=getattr(opts, "local_cidr6", None),
                      gateway6=getattr(opts, "gateway_ip6", None),
                      ipv6=not _camex_ko(opts.tun_dev), aes=wants_aes(opts))
    if opts.protocol == "v2":
        return v2
    from ..tunnel.client import AutoClientCore   # (not resident in a v2-only client)
    return AutoClientCore(v2, legacy)


def _camex_ko(tun_dev: str | None) -> bool:
    """Is the TUN camex.ko's (/dev/camex)? Its contract is IPv4 only."""
    return tun_dev is not None and os.path.basename(tun_dev) == "camex"


def ipv6_not_carried(opts, tun_path: str | None = None) -> str | None:
    """The start-up line of a client whose TUN carries no IPv6 (camex.ko:
    --tun-dev, or `tun_path`, the device that opened) while its command
    line asks for IPv6 inside the tunnel, or might get it (auto mode over
    v2); None otherwise."""
    path = tun_path or opts.tun_dev
    if not _camex_ko(path):
        return None
    six = [str(x) for x in (getattr(opts, "local_cidr6", None),
                            getattr(opts, "gateway_ip6", None)) if x is not None]
    six += [str(r) for r in opts.routes if r.version == 6]
    if six:
        return (f"IPv6 inside the tunnel is not carried on {path} (camex.ko carries "
                f"IPv4 only): {', '.join(six)} not installed")
    if opts.auto and opts.psk and opts.protocol != "legacy":
        return (f"IPv6 inside the tunnel is not carried on {path} (camex.ko carries "
                f"IPv4 only): IPv6 addresses and routes of the server's profile are not asked for")
    return None


class ClientIO:
    """The client's narrow view of the system; camex.testing.fakes has stand-ins."""

    def __init__(self, open_tun: Callable = offload.open_tun,
                 link: Callable = netlink.LinkConfig, resolve: Callable = udp.resolve,
                 connect: Callable = udp.client_socket,
                 prepare_interface: Callable = netlink.disable_ipv6, signals: bool = True):
        self.open_tun = open_tun
        self.link = link
        self.resolve = resolve
        self.connect = connect
        self.prepare_interface = prepare_interface
        self.signals = signals


class ClientDaemon:
    def __init__(self, opts, io: ClientIO | None = None):
        self.opts = opts
        self.io = io or ClientIO()
        self.key = codec.derive_key(opts.psk) if opts.encrypt else None
        client_id = opts.name
        if opts.auto and not client_id:
            try:
                client_id = netlink.default_route_mac()
            except netlink.NetlinkConfigError as e:
                raise StartupError(f"--name: not given, and the default route cannot "
                                   f"be read: {e}") from None
            if not client_id:
                raise StartupError("--name: not given and no default-route interface "
                                   "with a MAC address to derive it from")
            LOG.info("client ID %s (MAC of the default-route interface)", client_id)
        self.keylog = open_keylog(opts.keylog)
        self.core: ClientCore = make_core(opts, client_id, self.key, self.keylog)
        self.loop = None
        self.tun: Device | None = None
        self.link = None
        self.sock = None
        self.server = None
        self.next_connect = 0.0
        self.throttle = Throttle()
        self.up = False
        self.features = gso.probe()
        self.sender = None
        self._recv = None
        self._tso_switch = False
        self._tso_check = 0.0     # when a flush may next ask (TSO_CHECK_EVERY)
        self._path_reconnect = -1e9
        # Start of the last readiness event per descriptor: a lone packet or a burst?
        self._tun_at = self._sock_at = -1.0
        core = self.core
        self._rx_backlog = lambda: _backlog(core.to_tun)  # auto: the active core's
        self._flush_lone = functools.partial(self._flush, False)

    def run(self) -> int:
        self.loop = Loop(signals=self.io.signals)
        try:
            try:
                self.tun = self.io.open_tun(self.opts.tun_dev)
            except OSError as e:
                raise StartupError(str(e)) from None
            self.io.prepare_interface(self.tun.name)
            line = ipv6_not_carried(self.opts, self.tun.path)
            if line is not None:
                LOG.warning("%s", line)
            v2core = getattr(self.core, "v2", self.core)
            if _camex_ko(self.tun.path) and hasattr(v2core, "drop_ipv6"):
                v2core.drop_ipv6()
            if self.core.bulk:
                # BULK pays only where the TUN takes a super-packet whole
                # (virtio-net header); camex.ko's would be cut in Python,
                # dearer than per-packet DATA, so such a client asks for DATA.
                self.core.accept_bulk(self.tun.offload)
            try:
                self.link = self.io.link(self.tun.name)
            except netlink.NetlinkConfigError as e:
                raise StartupError(str(e)) from None
            if self.tun.offload and self.core.bulk:
                # A super-packet then seals into a BULK frame that is ONE
                # UDP GSO send (not two): one send, one receive per frame.
                self.link.gso_max_size = self.core.tso_max()
            protocol = {"legacy": "legacy", "v2": "v2", "auto": "v2, else legacy"}[
                self.opts.protocol] if self.opts.psk else "legacy"
            LOG.info("client %s: TUN %s (%s), server %s, protocol %s%s",
                     self.core.client_id or self.opts.local_cidr, self.tun.name,
                     self.tun.path, fmt_host(self.opts.server_host, self.opts.port), protocol,
                     ", legacy encrypted, key fingerprint " + codec.fingerprint(self.key)
                     if self.key else ", legacy plaintext" if protocol != "v2" else "")
            LOG.info("data path: %s, UDP GSO %s, UDP GRO %s",
                     self.tun.why or "TUN plain",
                     "on" if self.features.udp_gso else "off (kernel < 4.18)",
                     "on" if self.features.udp_gro else "off (kernel < 5.0)")
            # Only a core that may carry super-packets whole (v2) switches TSO.
            self._tso_switch = self.tun.offload and self.core.bulk
            self.loop.sel.register(self.tun, selectors.EVENT_READ, self._tun_readable)
            self.loop.serve_control(self.opts.control_socket, {"status": self.status})
            now = self.loop.now()
            if ":" in self.opts.server_host:
                # An IPv6 literal: the first TUN configuration has the IPv6
                # MTU (a name's family is known at connect: outer_family).
                self.core.outer_family(True)
            self.core.start(now)
            self._flush()
            self._connect(now)
            self.loop.run(self._deadline, self._timer)
            LOG.info("stopping")
            if self.sock is not None:
                self.core.close(self.loop.now())  # v2: the server frees us at once
                self._flush()
            return 0
        finally:
            self._shutdown()

    # ----------------------------------------------------- connection

    def _connect(self, now: float) -> None:
        if self.sock is not None:
            self.loop.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None
        try:
            self.server, self.sock = self._open_socket()
        except (OSError, socket.gaierror) as e:
            self.throttle.warning("connect", "cannot reach server %s: %s; retrying "
                                  "every %.0f s", fmt_host(self.opts.server_host, self.opts.port),
                                  e, RESOLVE_RETRY)
            self.next_connect = now + RESOLVE_RETRY
            self.loop.deadline_fn = self._deadline
            return
        self.next_connect = 0.0
        # Connected: the loop asks the core itself (no _deadline frame per wake-up).
        self.loop.deadline_fn = self.core.next_deadline
        if self.features.udp_gro:
            gso.enable_gro(self.sock)
        self.sender = gso.Sender(self.sock, self.features.udp_gso, self._send_error)
        self._recv = gso.gro_receiver(self.sock)
        self.loop.sel.register(self.sock, selectors.EVENT_READ, self._sock_readable)
        LOG.debug("connected to %s from port %d", fmt(self.server), self.sock.getsockname()[1])
        self.core.outer_family(":" in self.server[0])
        if self.tun.offload and self.core.bulk:
            # BULK fragments are 20 bytes smaller over IPv6: a TSO super-packet
            # still seals into a frame of one send (applied with the MTU).
            self.link.gso_max_size = self.core.tso_max()
        self.core.connected(now)
        self._flush()

    def _open_socket(self):
        """(server endpoint, connected socket): the first of the server's
        addresses (AAAA and A records, getaddrinfo's order) that a socket
        connects to; a family without a route fails at connect() and the
        next address is tried. Raises the last error."""
        error: Exception = OSError("no address")
        for addr in self.io.resolve(self.opts.server_host, self.opts.port):
            try:
                return canonical(addr), self.io.connect(addr, self.opts.bind_ip,
                                                        self.opts.bind_dev)
            except OSError as e:
                error = e
        raise error

    def _deadline(self) -> float:
        if self.sock is None:
            return self.next_connect
        return self.core.next_deadline()

    def _timer(self, now: float) -> None:
        if self.sock is None:
            if now >= self.next_connect:
                self._connect(now)
            return
        self.core.on_timer(now)
        self._flush()

    # --------------------------------------------------------- data path

    def _tun_readable(self) -> None:
        core = self.core
        now = self.loop.now()
        # A lone packet (idle tunnel, interactive traffic) goes out at once,
        # without the read that would only find the queue empty: epoll is
        # level-triggered and calls again if more came meanwhile. Packets
        # that follow each other closely are a burst: drained in batches,
        # for UDP GSO and merged writes (docs/FASTPATH.md).
        burst = now - self._tun_at < BURST_GAP
        self._tun_at = now
        # A TUN with offloads returns a whole super-packet per read, cut
        # into packets with correct checksums (camex.io.offload).
        read = self.tun.read_items
        frame = core.tun_frame   # a steady stream's super-packet in one call
        for _ in range(BATCH):
            pkts = read()
            if pkts is None:
                break
            try:
                for pkt in pkts:
                    if type(pkt) is SuperPacket:
                        if frame is None or not frame(pkt[0], pkt[1], now):
                            self._super_packet(pkt, now)
                    else:
                        core.tun_packet(pkt, now)
            except Exception as e:  # noqa: BLE001 - see log.fault
                fault(e, "a packet from the TUN")
            if not burst:
                self._flush(False)
                return
            to_net = core.to_net
            if len(to_net) == 1 and type(to_net[0]) is Run and self.sock is not None:
                # One BULK frame (a TCP stream's every read): sent as it is
                # sealed, the rest of _flush's work left to the batch's end.
                sender = self.sender
                sender.send_run(to_net[0])
                to_net.clear()
                if sender.fallback_reason:
                    LOG.warning("%s", sender.fallback_reason)
                    sender.fallback_reason = None
            elif len(to_net) >= FLUSH_AT or (to_net and type(to_net[-1]) is Run):
                self._flush()   # (a BULK frame is one Run of up to 64 KiB: send it)
        self._flush()
        self._tun_at = self.loop.now()  # a long batch is no gap

    def _sock_readable(self) -> None:
        now = self.loop.now()
        burst = now - self._sock_at < BURST_GAP
        self._sock_at = now
        if not burst:
            # udp.receive's lone case inline, the core's `one` called
            # directly: the Python calls of an idle round trip run cold.
            try:
                data, size, _addr = self._recv()
            except BlockingIOError:
                return
            except OSError as e:
                self._recv_error(e)   # (read on or not: epoll calls again if more came)
                return
            receiver = self.core.datagram_received
            try:
                if size:
                    udp.deliver_gro(receiver, data, size, now)
                else:
                    receiver.one(data, now)
            except Exception as e:  # noqa: BLE001 - see log.fault
                fault(e, "a datagram from the server")
            self._flush_lone()
            return
        # A burst: with UDP GRO one receive may hold many datagrams.
        udp.receive(self._recv, self.core.datagram_received, False, now, True,
                    self._rx_backlog, FLUSH_AT, self._flush, self._recv_error)
        self._sock_at = self.loop.now()

    def _recv_error(self, e: OSError) -> bool:
        if isinstance(e, ConnectionRefusedError):
            # ICMP port unreachable: the server is down. The silence timer
            # reconnects; nothing else to do.
            return True
        self.throttle.warning("recv", "receive error: %s", e)
        return False

    def _super_packet(self, item: SuperPacket, now: float) -> None:
        """A TSO read: sealed whole by a core that can now (v2 BULK:
        `bulk_ready`, `tun_super`), else cut here."""
        core = self.core
        if core.bulk_ready:
            core.tun_super(item[0], item[1], now)
            return
        try:
            segs = netpkt.segment(item[0], item[1])
        except netpkt.OffloadError:
            return
        for seg in segs:
            core.tun_packet(seg, now)

    def _send_error(self, e, addr) -> None:
        self.throttle.warning("send", "send error: %s", e)
        if e.errno in PATH_GONE and self.loop is not None:
            # The route to the server's address went away (e.g. the IPv4
            # address of the link): a new socket, to the first of its
            # addresses that connects (IPv6 where IPv4 left). A v2 session
            # goes on over it (the server follows, as after any roam); a
            # legacy client registers again.
            now = self.loop.now()
            if now - self._path_reconnect >= PATH_RECONNECT_EVERY:
                self._path_reconnect = now
                self.core.events.append(Reconnect(f"server unreachable from this socket "
                                                  f"({e.strerror})"))

    def _flush(self, tso: bool = True) -> None:
        """Send and write what the core produced. `tso` False (after a lone
        packet): skip asking the core whether TSO should switch; bursts,
        timers and reconnects ask (a lone packet's delay matters more than
        TSO coming on one batch later)."""
        core = self.core
        out = core.to_net
        if out:
            if self.sock is not None:
                if len(out) == 1:
                    if type(out[0]) is Run:
                        # One BULK frame (a TCP stream's usual flush).
                        self.sender.send_run(out[0])
                        if self.sender.fallback_reason:
                            LOG.warning("%s", self.sender.fallback_reason)
                            self.sender.fallback_reason = None
                    else:
                        # A lone datagram: one send(), none of the batching.
                        try:
                            self.sock.send(out[0])
                        except (BlockingIOError, ConnectionRefusedError):
                            pass  # a full buffer drops, as a NIC would; ICMP: timers act
                        except OSError as e:
                            self._send_error(e, None)
                else:
                    # Equal-sized datagrams go out in one sendmsg (UDP GSO).
                    self.sender.send(out)
                    if self.sender.fallback_reason:
                        LOG.warning("%s", self.sender.fallback_reason)
                        self.sender.fallback_reason = None
            out.clear()
        tun = self.tun
        if tso and self._tso_switch and (t := time.monotonic()) >= self._tso_check:
            self._tso_check = t + TSO_CHECK_EVERY
            if core.bulk_ready != tun.tso:
                # TSO only while the core carries super-packets whole: for
                # one-packet-per-datagram framings the kernel cuts faster.
                LOG.info("TUN TSO %s", "on" if tun.set_tso(not tun.tso) else "off")
        to_tun = core.to_tun
        if to_tun:
            if len(to_tun) == 1 and type(to_tun[0]) is not SuperPacket:
                # A lone packet (write_queued's first case, inlined: one
                # Python call fewer after every lone datagram received).
                tun.write(to_tun[0])
                to_tun.clear()
            else:
                write_queued(tun, to_tun)
        if core.events:
            events, core.events = core.events, []
            for ev in events:
                if isinstance(ev, IfConfig):
                    self._apply(ev)
                elif isinstance(ev, Reconnect):
                    LOG.info("reconnecting: %s", ev.reason)
                    self._connect(self.loop.now())

    def _apply(self, cfg: IfConfig) -> None:
        try:
            self.link.apply(cfg)
        except netlink.NetlinkConfigError as e:
            LOG.error("%s", e)
            return
        addrs = " ".join(str(a) for a in (cfg.address, cfg.address6) if a is not None)
        gws = " ".join(str(g) for g in (cfg.gateway, cfg.gateway6) if g is not None)
        LOG.info("tunnel up: dev %s address %s mtu %d%s%s", self.tun.name, addrs,
                 cfg.mtu, f" gateway {gws}" if gws else "",
                 "".join(f" route {r}" for r in cfg.routes))
        self.up = True

    def status(self) -> dict:
        core = self.core
        now = self.loop.now()
        counters = core.counters()
        # What the v2 session refused (replays, forgeries aimed at us).
        drops = dict(core.drops)
        drops.update((k, v) for k, v in counters.items() if k.startswith("v2-"))
        return {
            "mode": "client",
            "protocol": core.protocol,
            # v2 is always encrypted (a passphrase without -e is enough).
            "encrypted": self.key is not None or core.protocol == "v2",
            "client_id": core.client_id,
            "interface": self.tun.name if self.tun else None,
            "tun": self.tun.counters() if self.tun else None,
            "address": str(core.config.address) if core.config and core.config.address else None,
            "address6": str(core.config.address6) if core.config and getattr(
                core.config, "address6", None) else None,
            "mtu": core.config.mtu if core.config else None,
            "server": fmt(self.server) if self.server else
                      fmt_host(self.opts.server_host, self.opts.port),
            "local_port": self.sock.getsockname()[1] if self.sock else None,
            "last_received_ago": None if core.last_rx is None else round(now - core.last_rx, 3),
            "last_register_ago": round(now - core.last_register, 3),
            "tx_packets": core.tx_packets, "tx_bytes": core.tx_bytes,
            "rx_packets": core.rx_packets, "rx_bytes": core.rx_bytes,
            # v2 BULK frames (one AEAD per super-packet); None on legacy.
            "bulk_tx_frames": counters.get("bulk_tx_frames"),
            "bulk_rx_frames": counters.get("bulk_rx_frames"),
            # v2 handshakes completed, and the age of the session in use
            # (None without v2, or before the first handshake).
            "handshakes": counters.get("handshakes"),
            # The v2 session's AEAD (camex.v2.session.cipher_name); None on legacy.
            "cipher": counters.get("cipher"),
            "last_handshake_ago": None if counters.get("session_created") is None
            else round(now - counters["session_created"], 3),
            "drops": drops,
            "process": process_status(),
        }

    def _shutdown(self) -> None:
        if self.link is not None:
            self.link.clear()
            self.link.close()
        if self.sock is not None:
            self.sock.close()
        if self.tun is not None:
            self.tun.close()
        if self.loop is not None:
            self.loop.close()

"""The server daemon: one UDP socket, the server core, the configuration
file and the control socket."""

from __future__ import annotations

import errno
import functools
import ipaddress
import selectors
import socket
from typing import Callable
import time

from ..base import netpkt
from ..base.endpoint import fmt
from .config import check_policy
from ..base.contract import Device, ServerCore, SuperPacket
from ..base.endpoint import outer_ip_udp
from ..legacy.ifconfig import PATH_MTU, IfConfig, default_mtu
from ..tunnel.server import ServerMux
from ..io import gso, mmsg, offload, udp
from ..v2 import wire
from ..v2.framing import Run
from .keylog import open_keylog
from ..legacy import codec
from ..base.log import LOG, Throttle, fault
from .procinfo import process_status
from .server_state_io import ServerState
from ..io.tun import write_queued
from ..io.udp import BATCH
from .loop import BURST_GAP, TSO_CHECK_EVERY, Loop, StartupError
from .options import read_psk_file, v2_timers, wants_aes

FLUSH_AT = 128  # datagrams queued before a mid-batch flush (bounds memory)
# recvmmsg: reads per call and calls per readiness event (64 reads at most,
# as udp.BATCH). Each read has a 64 KiB slot (a GRO read of a v2 BULK
# frame fills one): 16 keep the receive buffers' worst case at 1 MiB
# resident, and a fleet's 1,200-byte datagrams touch 4 KiB of each.
MMSG_BATCH = 16
MMSG_ROUNDS = 4
GRO_HOLD = 1.0   # s after a GRO read during which bursts skip recvmmsg


def protocols(opts, config) -> list[str]:
    """The protocols a server with these options and this configuration
    serves, v2 first; StartupError if none (also `camex check-config`)."""
    legacy = opts.legacy and opts.protocol != "v2"
    # v2 needs a passphrase: the global one or a [client ID] psk.
    v2 = opts.protocol != "legacy" and bool(
        opts.psk or (config is not None and config.psk_entries()))
    if not legacy and not v2:
        raise StartupError("--no-legacy: v2 needs a passphrase (-k, --psk-file, or "
                           "psk= in client sections)")
    return [name for name, on in (("v2", v2), ("legacy", legacy)) if on]


def listens_ipv6(opts) -> bool:
    """May IPv6 peers come? An IPv6 -b, or the default (:: and 0.0.0.0)."""
    return not opts.bind_ip or ":" in opts.bind_ip


def tun_mtu(opts, config, served, ipv6: bool) -> int:
    """The --server-tun TUN's MTU, by the rule of the clients' TUNs: -t,
    else mtu= of [defaults] lowered to what fits a 1500-byte path, else
    that figure. The figure is the smallest of the protocols served (v2
    1438, legacy 1429 encrypted or 1472 plaintext) over the outer family
    the server listens on (20 less where IPv6 peers may come: 1418, 1409,
    1452), so a packet from this TUN reaches any client unfragmented."""
    if opts.mtu:
        return opts.mtu
    rooms = []
    if "v2" in served:
        rooms.append(PATH_MTU - outer_ip_udp(ipv6) - wire.OVERHEAD)
    if "legacy" in served:
        rooms.append(default_mtu(opts.encrypt, ipv6))
    room = min(rooms) if rooms else default_mtu(opts.encrypt, ipv6)
    offered = config.defaults.mtu if config is not None else None
    return min(offered, room) if offered else room


def tun_config(opts, config, served=(), ipv6: bool | None = None) -> IfConfig:
    """The --server-tun TUN's addresses: -l, else the gateway of [defaults]
    (one per family); its MTU: tun_mtu() (also `camex check-config`)."""
    address, address6 = _tun_address(opts, config, 4), _tun_address(opts, config, 6)
    if address is None and address6 is None:
        raise StartupError("--server-tun: needs -l A.B.C.D/NN or gateway_ip "
                           "in the [defaults] of the configuration file")
    mtu = tun_mtu(opts, config, served, listens_ipv6(opts) if ipv6 is None else ipv6)
    return IfConfig(address, mtu, None, list(opts.routes), address6=address6)


def _tun_address(opts, config, version: int):
    """The server TUN's address of one family: -l of that family, else the
    [defaults] gateway_ip of that family with the prefix of its local_cidr
    (24 for IPv4, 64 for IPv6 without one), else None."""
    six = version == 6
    own = getattr(opts, "local_cidr6", None) if six else opts.local_cidr
    if own is not None:
        return own
    d = config.defaults if config else None
    gw = getattr(d, "gateway_ip6" if six else "gateway_ip", None)
    if gw is None:
        return None
    local = getattr(d, "local_cidr6" if six else "local_cidr", None)
    prefix = local.network.prefixlen if local is not None else (64 if six else 24)
    return ipaddress.ip_interface(f"{gw}/{prefix}")


def _netlink_link(ifname: str):
    # Only a server with a TUN of its own configures a link (through a
    # helper child: camex.io.netlink), so the module loads only then.
    from ..io import netlink
    return netlink.LinkConfig(ifname)


def _prepare_interface(ifname: str) -> None:
    from ..io import netlink
    netlink.disable_ipv6(ifname)


class ServerIO:
    """The server's narrow view of the system, as ClientIO is the client's;
    camex.testing.fakes has stand-ins for the TUN and the link."""

    def __init__(self, open_tun: Callable = offload.open_tun, link: Callable = _netlink_link,
                 bind: Callable = udp.server_socket,
                 prepare_interface: Callable = _prepare_interface, signals: bool = True,
                 batched: bool | None = None):
        self.open_tun = open_tun
        # recvmmsg/sendmmsg on the UDP socket where libc has them (camex.io.mmsg);
        # False keeps the one-datagram path (a bound socket that is no real
        # socket, in tests; CAMEX_FASTPATH=nommsg, to compare).
        self.batched = not netpkt.disabled("nommsg") if batched is None else batched
        self.link = link
        self.bind = bind
        self.prepare_interface = prepare_interface
        self.signals = signals


class ServerDaemon:
    def __init__(self, opts, load_config, io: ServerIO | None = None):
        self.opts = opts
        self.io = io or ServerIO()
        self.load_config = load_config  # () -> ServerConfig | None, raises on errors
        self.key = codec.derive_key(opts.psk) if opts.encrypt else None
        self.passphrase = opts.psk
        config = load_config()
        self.start_config = config   # (the server TUN's MTU, once the socket is bound)
        self.protocols = protocols(opts, config)
        self.tun_config = tun_config(opts, config, self.protocols) if opts.server_tun else None
        # The server TUN's address is the server's: no client may hold it.
        self.server_interfaces = [a for a in (self.tun_config.address,
                                              self.tun_config.address6)
                                  if a is not None] if self.tun_config else []
        if config is not None:
            check_policy(config, self.server_interfaces)
        legacy, v2 = "legacy" in self.protocols, "v2" in self.protocols
        self.keylog = open_keylog(opts.keylog) if v2 else None
        # Beside legacy, the v2 half starts with the first v2 datagram: a
        # fleet of legacy cameras never loads it (camex.tunnel.server).
        self.core: ServerCore = ServerMux(passphrase=opts.psk, encrypt=opts.encrypt, config=config,
                              legacy=legacy, v2=v2, local_delivery=opts.server_tun,
                              keylog=self.keylog, lazy_v2=legacy,
                              make_timers=functools.partial(v2_timers, opts) if v2 else None,
                              max_clients=opts.max_clients,
                              server_interfaces=self.server_interfaces,
                              aes=v2 and wants_aes(opts))
        # Legacy clients and counters kept across restarts (--state-dir).
        self.state = ServerState(self.core, opts)
        self.loop = None
        self.sock = None
        self.tun: Device | None = None
        self.link = None
        self.throttle = Throttle()
        self.features = gso.probe()
        self.sender = None
        self._to_sock = None
        self._recv = None
        self._recv_one = None     # _recv without _noting_gro (the lone path notes it itself)
        self._batch = None    # camex.io.mmsg.Batch where libc has recvmmsg/sendmmsg
        self._one_read = None
        self._batch_recv = None
        self._gro = False     # a GRO batch was read since the last wake-up (_sock_batch)
        self._gro_at = -1e9   # ... and when
        # Start of the last readiness event per descriptor: a lone packet or a burst?
        self._tun_at = self._sock_at = -1.0
        self._flush_lone = functools.partial(self._flush, False)
        self._tso_check = 0.0     # when a flush may next ask (TSO_CHECK_EVERY)

    def _open_tun(self) -> None:
        from ..io.netlink import NetlinkConfigError

        try:
            self.tun = self.io.open_tun(self.opts.tun_dev)
            self.io.prepare_interface(self.tun.name)
            self.link = self.io.link(self.tun.name)
            tso_max = self.core.tso_max()
            if self.tun.offload and tso_max is not None:
                # As the client's: one BULK frame per UDP send.
                self.link.gso_max_size = tso_max
            self.link.apply(self.tun_config)
        except (OSError, NetlinkConfigError) as e:
            raise StartupError(f"--server-tun: {e}") from None
        self.loop.sel.register(self.tun, selectors.EVENT_READ, self._tun_readable)
        LOG.info("server TUN %s address %s mtu %d (%s)", self.tun.name,
                 " ".join(str(a) for a in (self.tun_config.address, self.tun_config.address6)
                          if a is not None), self.tun_config.mtu, self.tun.why)

    def _tun_readable(self) -> None:
        # A lone packet goes out at once, a burst is drained in batches
        # (see ClientDaemon._tun_readable).
        now = self.loop.now()
        burst = now - self._tun_at < BURST_GAP
        self._tun_at = now
        core, read = self.core, self.tun.read_items
        for _ in range(BATCH):
            pkts = read()
            if pkts is None:
                break
            try:
                for pkt in pkts:
                    if type(pkt) is SuperPacket:
                        self._super_packet(pkt)
                    else:
                        core.tun_packet(pkt, now)
            except Exception as e:  # noqa: BLE001 - see log.fault
                fault(e, "a packet from the TUN")
            if not burst:
                self._flush(False)
                return
            out = core.outbox
            if len(out) >= FLUSH_AT or (out and type(out[-1][0]) is Run):
                self._flush()   # (a BULK frame is one Run of up to 64 KiB: send it)
        self._flush()
        self._tun_at = self.loop.now()

    def run(self) -> int:
        self.loop = Loop(signals=self.io.signals)
        try:
            try:
                self.sock = self.io.bind(self.opts.port, self.opts.bind_ip, self.opts.bind_dev)
            except OSError as e:
                raise StartupError(f"--port: cannot bind UDP port {self.opts.port}"
                                   f"{' on ' + self.opts.bind_ip if self.opts.bind_ip else ''}"
                                   f": {e.strerror}") from None
            if self.features.udp_gro:
                gso.enable_gro(self.sock)
            if self.io.batched and isinstance(self.sock, socket.socket) and mmsg.available():
                # (Its addresses are canonical endpoints both ways, as below.)
                self._batch = mmsg.Batch(self.sock, MMSG_BATCH, on_error=self._send_error)
                self._one_read = udp.one_read(self.core.datagram_received)
                # Its receive slots (16 x 64 KiB for GRO reads) go back with the heap's.
                self.loop.trim.also.append(self._batch.release)
            # An AF_INET6 socket takes IPv4 peers v4-mapped: the cores' endpoints
            # are canonical (camex.base.endpoint), mapped at the send edge.
            self._to_sock = gso.sockaddr_for(self.sock)
            self.sender = gso.Sender(self.sock, self.features.udp_gso, self._send_error,
                                     self._to_sock, batch=self._batch)
            self._recv = self._recv_one = gso.gro_receiver(self.sock)
            if self._batch is not None:
                self._recv, self._batch_recv = self._noting_gro(self._recv, self._batch.recv)
            LOG.info("data path: UDP GSO %s, UDP GRO %s, recvmmsg/sendmmsg %s",
                     "on" if self.features.udp_gso else "off (kernel < 4.18)",
                     "on" if self.features.udp_gro else "off (kernel < 5.0)",
                     "on" if self._batch else "off")
            self.loop.sel.register(self.sock, selectors.EVENT_READ,
                                   self._sock_batch if self._batch else self._sock_readable)
            if self.state is not None:
                # Before "listening": a client's first datagram finds its entry.
                self.state.load(self.loop.now())
                self._flush()
            if self.tun_config is not None:
                if self.sock.family != socket.AF_INET6 and listens_ipv6(self.opts):
                    # No IPv6 on this host after all (the AF_INET fallback).
                    self.tun_config = tun_config(self.opts, self.start_config, self.protocols,
                                                 False)
                self._open_tun()
            self.loop.serve_control(self.opts.control_socket,
                                    {"status": self.status, "reload": self.loop.request_reload})
            LOG.info("listening on %s (%s; legacy %s%s)%s", fmt(self.sock.getsockname()),
                     " and ".join(self.protocols),
                     "encrypted" if self.key else "plaintext",
                     ", key fingerprint " + codec.fingerprint(self.key) if self.key else "",
                     ", IPv6 and IPv4" if self._to_sock is not None
                     and self.sock.getsockname()[0] == "::" else "")
            self.loop.run(self._next_deadline, self._timer, self._reload)
            LOG.info("stopping")
            # v2 clients get a CLOSE, so they knock again at once and are
            # back as soon as a new server is.
            self.core.close(self.loop.now())
            self._flush()
            if self.state is not None:
                self.state.save(self.loop.now())
            return 0
        finally:
            if self.link is not None:
                self.link.clear()
                self.link.close()
            if self.tun is not None:
                self.tun.close()
            if self._batch is not None:
                self._batch.close()
            if self.sock is not None:
                self.sock.close()
            self.loop.close()

    def status(self) -> dict:
        now = self.loop.now()
        return {"mode": "server", "port": self.opts.port, "encrypted": self.key is not None,
                "wall_time": round(time.time(), 3),
                "protocols": self.protocols, "clients": self.core.status_clients(now),
                "tun": self.tun.counters() if self.tun is not None else None,
                **self.core.v2_counters(),
                "drops": self.core.drops(), "address_refusals": self.core.refusals(),
                "process": process_status()}

    def _reload(self) -> None:
        try:
            config = self.load_config()
            if config is not None:
                check_policy(config, self.server_interfaces)
            passphrase = self.passphrase
            if self.opts.psk_source == "--psk-file":
                # The global passphrase file is re-read too, so that
                # rotating it takes effect without a restart.
                passphrase = read_psk_file(self.opts.psk_file)
        except Exception as e:  # a bad file must not take the server down
            LOG.error("reload failed, keeping the old configuration: %s", e)
            return
        if passphrase != self.passphrase:
            self.passphrase = passphrase
            if self.opts.encrypt:
                self.key = codec.derive_key(passphrase)
                LOG.info("global passphrase changed, key fingerprint %s",
                         codec.fingerprint(self.key))
        self.core.reload(config, self.passphrase, self.loop.now())
        LOG.info("configuration reloaded: %d client section(s)",
                 len(config.clients) if config else 0)

    def _next_deadline(self) -> float:
        t = self.core.next_deadline()
        return t if self.state is None else min(t, self.state.next_save)

    def _timer(self, now: float) -> None:
        self.core.on_timer(now)
        self._flush()
        if self.state is not None and now >= self.state.next_save and self.state.save(now):
            self.loop.trim.now()

    def _sock_readable(self) -> None:
        now = self.loop.now()
        burst = now - self._sock_at < BURST_GAP
        self._sock_at = now
        # With UDP GRO one receive may hold many datagrams of one sender
        # (equal size; udp.receive offers it whole, else cuts it apart).
        udp.receive(self._recv, self.core.datagram_received, True, now, burst, self._backlog,
                    FLUSH_AT, self._flush if burst else self._flush_lone, self._recv_error)
        if burst:
            self._sock_at = self.loop.now()

    def _sock_batch(self) -> None:
        # In a burst, recvmmsg: datagrams of many senders per call, the
        # legacy relay's batch path, one flush per batch (sendmmsg, GSO per
        # destination). A lone datagram takes the one-read path: a ctypes
        # call costs ~2 us more than recvmsg, on an idle tunnel's round trip.
        now = self.loop.now()
        burst = now - self._sock_at < BURST_GAP
        self._sock_at = now
        if not burst:
            # udp.receive's lone case inline, the core's `one` called
            # directly: the Python calls of an idle round trip run cold.
            try:
                data, size, addr = self._recv_one()
            except BlockingIOError:
                return
            except OSError as e:
                # (Whether to read on or not: epoll, level-triggered, calls
                # again at once if a datagram is waiting.)
                self._recv_error(e)
                return
            if size:
                self._gro = True
                self._one_read(data, addr, size, now)
            else:
                try:
                    self.core.datagram_received.one(data, addr, now)
                except Exception as e:  # noqa: BLE001 - see log.fault
                    fault(e, f"a datagram from {fmt(addr)}")
            self._flush_lone()
            return
        if self._gro:
            self._gro, self._gro_at = False, now
        if now - self._gro_at < GRO_HOLD:
            # A sender whose datagrams the kernel coalesces (a TCP stream,
            # BULK frames) was read lately: a 64 KiB GRO read already holds
            # dozens, and the one-buffer path serves it with less CPU and
            # memory than the ring (where each GRO read fills a 64 KiB slot
            # of its own: 1-2 MiB more resident in a relay).
            self._gro_burst(now)
        else:
            udp.receive_batch(self._batch_recv, self.core.datagrams_received, self._one_read,
                              now, MMSG_ROUNDS, self._batch.size, self._flush, self._recv_error)
        self._sock_at = self.loop.now()

    def _gro_burst(self, now: float) -> None:
        """udp.receive's burst for GRO reads, flat: a steady TCP stream
        takes this per BULK frame - one read, the whole frame to the
        core's frame path, its super-packet written at once - without
        receive()'s callbacks. Anything else as there: a read that is not
        one whole frame cut apart, a lone datagram to `one`, a flush
        whenever _backlog() would ask for one, and one at the end."""
        recv, receiver, core = self._recv_one, self.core.datagram_received, self.core
        whole, to_tun, out, tun = receiver.whole, core.to_tun, core.outbox, self.tun
        to_sock = self._to_sock
        for _ in range(BATCH):
            try:
                data, size, addr = recv()
            except BlockingIOError:
                break
            except OSError as e:
                if self._recv_error(e):
                    continue
                break
            try:
                if size:
                    self._gro = True
                    if not whole(data, size, addr, now):
                        udp.deliver_cut(receiver, data, size, addr, now)
                else:
                    receiver.one(data, addr, now)
            except Exception as e:  # noqa: BLE001 - see log.fault
                fault(e, f"a datagram from {fmt(addr)}")
            if to_tun and not out and len(to_tun) == 1 and type(to_tun[0]) is SuperPacket \
                    and tun is not None:
                # A whole frame's super-packet, and nothing else queued: the
                # write _flush would make, without its other cases.
                tun.write_batch(to_tun)
                to_tun.clear()
            elif out and not to_tun and len(out) == 1 and type(out[0][0]) is Run:
                # A frame relayed whole: its one send, as _flush would make it.
                run, ep = out[0]
                sender = self.sender
                sender.send_run(run, ep if to_sock is None else to_sock(ep))
                out.clear()
                if sender.fallback_reason:
                    LOG.warning("%s", sender.fallback_reason)
                    sender.fallback_reason = None
            elif self._backlog() >= FLUSH_AT:
                self._flush()
        self._flush()

    def _noting_gro(self, recv, recv_batch):
        """Both receive paths, noting whether the last read was a GRO
        batch: recvmmsg pays for bursts of lone datagrams of many senders
        (a camera fleet), the one-buffer path for GRO reads."""
        def read():
            r = recv()
            if r[1]:
                self._gro = True
            return r

        def read_batch():
            items = recv_batch()
            for _d, _a, size in items:
                if size:
                    self._gro = True
                    break
            return items
        return read, read_batch

    def _backlog(self) -> int:
        to_tun = self.core.to_tun
        if to_tun and type(to_tun[-1]) is SuperPacket:
            # A BULK super-packet (up to 64 KiB) is written whole, one write
            # each: holding many for one flush saves no syscall, only memory.
            return FLUSH_AT
        out = self.core.outbox
        if out and type(out[-1][0]) is Run:
            return FLUSH_AT      # a BULK frame to send (up to 64 KiB): as above
        return len(out) + len(to_tun)

    def _recv_error(self, e: OSError) -> bool:
        # ICMP errors from earlier sends surface here; keep serving.
        if e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
            self.throttle.warning("recv", "receive error: %s", e)
        return True

    def _super_packet(self, item: SuperPacket) -> None:
        """A TSO read: sealed whole by a core that can now (v2 BULK:
        `bulk_ready`, `tun_super`), else cut here."""
        core = self.core
        if core.bulk_ready:
            core.tun_super(item[0], item[1])
            return
        try:
            segs = netpkt.segment(item[0], item[1])
        except netpkt.OffloadError:
            return
        for seg in segs:
            core.tun_packet(seg)

    def _send_error(self, e, addr) -> None:
        self.throttle.warning("send", "send to %s failed: %s", fmt(addr), e)

    def _flush(self, tso: bool = True) -> None:
        """Write and send what the core produced; `tso` False after a lone
        packet (see ClientDaemon._flush)."""
        tun, core = self.tun, self.core
        if tun is not None:
            if tso and tun.offload and (t := time.monotonic()) >= self._tso_check:
                self._tso_check = t + TSO_CHECK_EVERY   # (see ClientDaemon._flush)
                if core.bulk_ready != tun.tso:
                    LOG.info("TUN TSO %s", "on" if tun.set_tso(not tun.tso) else "off")
            to_tun = core.to_tun
            if len(to_tun) == 1 and type(to_tun[0]) is not SuperPacket:
                tun.write(to_tun[0])   # a lone packet: write_queued's first case inlined
                to_tun.clear()
            elif to_tun:
                write_queued(tun, to_tun)
        out = core.outbox
        if not out:
            return
        if len(out) == 1 and type(out[0][0]) is not Run:
            # A lone datagram: one sendto(), none of the batching.
            datagram, addr = out[0]
            try:
                self.sock.sendto(datagram, addr if self._to_sock is None else self._to_sock(addr))
            except (BlockingIOError, ConnectionRefusedError):
                pass  # a full buffer drops, as a NIC would
            except OSError as e:
                self._send_error(e, addr)
        else:
            # Per destination, equal-sized datagrams go out in one sendmsg (GSO).
            self.sender.send_grouped(out)
            if self.sender.fallback_reason:
                LOG.warning("%s", self.sender.fallback_reason)
                self.sender.fallback_reason = None
        out.clear()

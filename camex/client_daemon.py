"""The client daemon: a TUN device, one UDP socket to the server, and the
client core between them. Reads are drained in batches and flushed in one
place, so that batching and offloads slot in without a rewrite."""

from __future__ import annotations

import selectors
import socket

from dataclasses import dataclass
from typing import Callable

from .core.client import IfConfig, LegacyClient, Reconnect
from .io import netlink, udp
from .io.tun import open_tun
from .legacy import codec
from .log import LOG, Throttle
from .loop import BATCH, RESOLVE_RETRY, Loop, StartupError


@dataclass
class ClientIO:
    """The client's narrow view of the system; camex.io.fake has stand-ins."""

    open_tun: Callable = open_tun
    link: Callable = netlink.LinkConfig
    resolve: Callable = udp.resolve
    connect: Callable = udp.client_socket
    prepare_interface: Callable = netlink.disable_ipv6
    signals: bool = True


class ClientDaemon:
    def __init__(self, opts, io: ClientIO | None = None):
        self.opts = opts
        self.io = io or ClientIO()
        self.key = codec.derive_key(opts.psk) if opts.encrypt else None
        client_id = opts.name
        if opts.auto and not client_id:
            client_id = netlink.default_route_mac()
            if not client_id:
                raise StartupError("--name: not given and no default-route interface "
                                   "with a MAC address to derive it from")
            LOG.info("client ID %s (MAC of the default-route interface)", client_id)
        self.core = LegacyClient(auto=opts.auto, client_id=client_id,
                                 local_cidr=opts.local_cidr, gateway=opts.gateway_ip,
                                 routes=opts.routes, mtu=opts.mtu, key=self.key)
        self.loop = None
        self.tun = None
        self.link = None
        self.sock = None
        self.server = None
        self.next_connect = 0.0
        self.throttle = Throttle()
        self.up = False

    def run(self) -> int:
        self.loop = Loop(signals=self.io.signals)
        try:
            try:
                self.tun = self.io.open_tun(self.opts.tun_dev)
            except OSError as e:
                raise StartupError(str(e)) from None
            self.io.prepare_interface(self.tun.name)
            try:
                self.link = self.io.link(self.tun.name)
            except netlink.NetlinkConfigError as e:
                raise StartupError(str(e)) from None
            LOG.info("client %s: TUN %s (%s), server %s:%d%s", self.core.client_id or
                     self.opts.local_cidr, self.tun.name, self.tun.path,
                     self.opts.server_host, self.opts.port,
                     ", encrypted, key fingerprint " + codec.fingerprint(self.key)
                     if self.key else ", plaintext")
            self.loop.sel.register(self.tun, selectors.EVENT_READ, self._tun_readable)
            self.loop.serve_control(self.opts.control_socket, {"status": self.status})
            now = self.loop.now()
            self.core.start(now)
            self._flush()
            self._connect(now)
            self.loop.run(self._deadline, self._timer)
            LOG.info("stopping")
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
            self.server = self.io.resolve(self.opts.server_host, self.opts.port)
            self.sock = self.io.connect(self.server, self.opts.bind_ip, self.opts.bind_dev)
        except (OSError, socket.gaierror) as e:
            self.throttle.warning("connect", "cannot reach server %s:%d: %s; retrying "
                                  "every %.0f s", self.opts.server_host, self.opts.port,
                                  e, RESOLVE_RETRY)
            self.next_connect = now + RESOLVE_RETRY
            return
        self.next_connect = 0.0
        self.loop.sel.register(self.sock, selectors.EVENT_READ, self._sock_readable)
        LOG.debug("connected to %s:%d from port %d", *self.server,
                  self.sock.getsockname()[1])
        self.core.connected(now)
        self._flush()

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
        core, tun = self.core, self.tun
        now = self.loop.now()
        for _ in range(BATCH):
            pkt = tun.read()
            if pkt is None:
                break
            core.tun_packet(pkt, now)
        self._flush()

    def _sock_readable(self) -> None:
        core, sock = self.core, self.sock
        now = self.loop.now()
        for _ in range(BATCH):
            try:
                data = sock.recv(udp.MAX_DATAGRAM)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                # ICMP port unreachable: the server is down. The silence
                # timer reconnects; nothing else to do.
                continue
            except OSError as e:
                self.throttle.warning("recv", "receive error: %s", e)
                break
            core.datagram_received(data, now)
        self._flush()

    def _flush(self) -> None:
        core = self.core
        if core.to_net:
            sock = self.sock
            if sock is not None:
                for d in core.to_net:
                    try:
                        sock.send(d)
                    except (BlockingIOError, ConnectionRefusedError):
                        pass
                    except OSError as e:
                        self.throttle.warning("send", "send error: %s", e)
            core.to_net.clear()
        if core.to_tun:
            write = self.tun.write
            for p in core.to_tun:
                write(p)
            core.to_tun.clear()
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
        LOG.info("tunnel up: dev %s address %s mtu %d%s%s", self.tun.name, cfg.address,
                 cfg.mtu, f" gateway {cfg.gateway}" if cfg.gateway else "",
                 "".join(f" route {r}" for r in cfg.routes))
        self.up = True

    def status(self) -> dict:
        core = self.core
        now = self.loop.now()
        return {
            "mode": "client",
            "protocol": "legacy",
            "encrypted": self.key is not None,
            "client_id": core.client_id,
            "interface": self.tun.name if self.tun else None,
            "address": str(core.config.address) if core.config else None,
            "mtu": core.config.mtu if core.config else None,
            "server": f"{self.server[0]}:{self.server[1]}" if self.server else
                      f"{self.opts.server_host}:{self.opts.port}",
            "local_port": self.sock.getsockname()[1] if self.sock else None,
            "last_received_ago": None if core.last_rx is None else round(now - core.last_rx, 3),
            "last_register_ago": round(now - core.last_register, 3),
            "tx_packets": core.tx_packets, "tx_bytes": core.tx_bytes,
            "rx_packets": core.rx_packets, "rx_bytes": core.rx_bytes,
            "drops": dict(core.drops),
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



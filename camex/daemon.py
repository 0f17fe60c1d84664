"""The event loop: thin adapters between the protocol cores and the kernel.

One thread, one selector. The cores (camex.core) decide everything; this
module only moves bytes between them and the TUN device and UDP socket,
applies interface configuration through netlink, keeps the clock, and turns
signals into events: SIGINT/SIGTERM stop, SIGHUP reloads (server).
Reads are drained in batches so that later work (sendmmsg, GSO) can slot in
where the batches are flushed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import selectors
import signal
import socket
import time

from .control import ControlServer
from .core.client import IfConfig, LegacyClient, Reconnect
from .core.server import LegacyServer
from .io import netlink, udp
from .io.tun import open_tun
from .legacy import codec
from .log import LOG, Throttle

BATCH = 64  # datagrams or packets handled per readiness event
RESOLVE_RETRY = 5.0
PR_SET_DUMPABLE = 4


class StartupError(RuntimeError):
    """A problem that stops the daemon before it runs, with a clear message."""


def harden_process() -> None:
    """No core dumps for a process that holds keys."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class PidFile:
    def __init__(self, path: str | None):
        self.path = path

    def __enter__(self):
        if self.path:
            try:
                with open(self.path) as f:
                    old = int(f.read().strip() or 0)
            except (OSError, ValueError):
                old = 0
            if old and old != os.getpid() and _alive(old):
                raise StartupError(f"--pid-file: {self.path} names a running process ({old})")
            # A stale pid file (its process is gone) is simply replaced.
            d = os.path.dirname(self.path)
            if d:
                os.makedirs(d, exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        return self

    def __exit__(self, *exc):
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"camex" in f.read()
    except OSError:
        return True


class Loop:
    """Selector, clock and signals shared by both roles."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.reload_requested = False
        self._control = None
        self._rsig, self._wsig = socket.socketpair()
        self._rsig.setblocking(False)
        self._wsig.setblocking(False)
        self.sel.register(self._rsig, selectors.EVENT_READ, self._drain_signals)
        self._old_wakeup = signal.set_wakeup_fd(self._wsig.fileno())
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stopping = True

    def _drain_signals(self):
        try:
            while self._rsig.recv(64):
                pass
        except BlockingIOError:
            pass

    def run(self, deadline_fn, timer_fn, idle_fn=None) -> None:
        while not self.stopping:
            now = self.now()
            deadline = deadline_fn()
            timeout = max(0.0, min(deadline - now, 1.0))
            for key, _ in self.sel.select(timeout):
                key.data()
                if self.stopping:
                    break
            if self.reload_requested and idle_fn is not None:
                self.reload_requested = False
                idle_fn()
            now = self.now()
            if now >= deadline_fn():
                timer_fn(now)

    def serve_control(self, path: str, handlers: dict):
        """Open the control socket; a daemon runs without it if that fails."""
        if not path:
            return None
        try:
            ctl = ControlServer(path, handlers)
        except OSError as e:
            LOG.warning("no control socket at %s: %s", path, e.strerror)
            return None
        self.sel.register(ctl, selectors.EVENT_READ, ctl.on_readable)
        self._control = ctl
        LOG.debug("control socket %s", ctl.path)
        return ctl

    def request_reload(self) -> dict:
        self.reload_requested = True
        return {"ok": True, "reload": "requested"}

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
        signal.set_wakeup_fd(self._old_wakeup)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        self.sel.close()
        self._rsig.close()
        self._wsig.close()


# ==================================================================== client


class ClientDaemon:
    def __init__(self, opts):
        self.opts = opts
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
        self.loop = Loop()
        try:
            try:
                self.tun = open_tun(self.opts.tun_dev)
            except OSError as e:
                raise StartupError(str(e)) from None
            netlink.disable_ipv6(self.tun.name)
            try:
                self.link = netlink.LinkConfig(self.tun.name)
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
            self.server = udp.resolve(self.opts.server_host, self.opts.port)
            self.sock = udp.client_socket(self.server, self.opts.bind_ip, self.opts.bind_dev)
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


# ==================================================================== server


class ServerDaemon:
    def __init__(self, opts, load_config):
        self.opts = opts
        self.load_config = load_config  # () -> ServerConfig | None, raises on errors
        self.key = codec.derive_key(opts.psk) if opts.encrypt else None
        config = load_config()
        self.core = LegacyServer(encrypt=opts.encrypt, global_key=self.key, config=config)
        self.loop = None
        self.sock = None
        self.throttle = Throttle()

    def run(self) -> int:
        self.loop = Loop()
        try:
            try:
                self.sock = udp.server_socket(self.opts.port, self.opts.bind_ip,
                                              self.opts.bind_dev)
            except OSError as e:
                raise StartupError(f"--port: cannot bind UDP port {self.opts.port}"
                                   f"{' on ' + self.opts.bind_ip if self.opts.bind_ip else ''}"
                                   f": {e.strerror}") from None
            self.loop.sel.register(self.sock, selectors.EVENT_READ, self._sock_readable)
            self.loop.serve_control(self.opts.control_socket,
                                    {"status": self.status, "reload": self.loop.request_reload})
            addr = self.sock.getsockname()
            LOG.info("listening on %s:%d (%s%s)", addr[0], addr[1],
                     "encrypted" if self.key else "plaintext",
                     ", key fingerprint " + codec.fingerprint(self.key) if self.key else "")
            self.loop.run(self.core.next_deadline, self._timer, self._reload)
            LOG.info("stopping")
            return 0
        finally:
            if self.sock is not None:
                self.sock.close()
            self.loop.close()

    def status(self) -> dict:
        now = self.loop.now()
        clients = []
        for p in self.core.by_endpoint.values():
            clients.append({
                "client_id": p.client_id,
                "address": p.ip_text,
                "endpoint": f"{p.endpoint[0]}:{p.endpoint[1]}",
                "protocol": "legacy",
                "mode": p.mode,
                "key": None if p.key is None else ("global" if p.key.client_id is None
                                                   else p.key.name),
                "registered_ago": round(now - p.registered_at, 3),
                "last_received_ago": round(now - p.last_rx, 3),
                "rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes,
                "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes,
            })
        return {"mode": "server", "port": self.opts.port, "encrypted": self.key is not None,
                "clients": clients, "drops": dict(self.core.drops)}

    def _reload(self) -> None:
        try:
            config = self.load_config()
        except Exception as e:  # a bad file must not take the server down
            LOG.error("reload failed, keeping the old configuration: %s", e)
            return
        self.core.reload(config, self.key)
        LOG.info("configuration reloaded: %d client section(s)",
                 len(config.clients) if config else 0)

    def _timer(self, now: float) -> None:
        self.core.on_timer(now)
        self._flush()

    def _sock_readable(self) -> None:
        core, sock = self.core, self.sock
        now = self.loop.now()
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(udp.MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as e:
                # ICMP errors from earlier sends surface here; keep serving.
                if e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                   errno.ENETUNREACH):
                    self.throttle.warning("recv", "receive error: %s", e)
                continue
            core.datagram_received(data, addr, now)
        self._flush()

    def _flush(self) -> None:
        out = self.core.outbox
        if not out:
            return
        sendto = self.sock.sendto
        for data, addr in out:
            try:
                sendto(data, addr)
            except BlockingIOError:
                pass
            except OSError as e:
                self.throttle.warning("send", "send to %s:%d failed: %s", addr[0], addr[1], e)
        out.clear()

"""The server daemon: one UDP socket, the server core, the configuration
file and the control socket."""

from __future__ import annotations

import errno
import selectors

from .core.server import LegacyServer
from .io import udp
from .legacy import codec
from .log import LOG, Throttle
from .loop import BATCH, Loop, StartupError
from .options import read_psk_file


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
            key = self.key
            if self.opts.encrypt and self.opts.psk_source == "--psk-file":
                # The global passphrase file is re-read too, so that
                # rotating it takes effect without a restart.
                key = codec.derive_key(read_psk_file(self.opts.psk_file))
        except Exception as e:  # a bad file must not take the server down
            LOG.error("reload failed, keeping the old configuration: %s", e)
            return
        if key != self.key:
            LOG.info("global passphrase changed, key fingerprint %s", codec.fingerprint(key))
            self.key = key
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

"""The control socket: `camex status` and `camex reload` talk to a running
daemon over a Unix stream socket that only root may open.

Protocol: the client sends one line, a command name (`status`, `reload`);
the daemon answers with one line of JSON and closes. The daemon handles a
connection in one non-blocking step, so a stuck client cannot stall the
data path: a request that does not arrive whole at once is dropped.
"""

from __future__ import annotations

import os
import socket

from ..base.log import LOG

MAX_REQUEST = 256


def default_path(mode: str, port: int) -> str:
    return f"/run/camex/{mode}-{port}.sock"


class ControlServer:
    def __init__(self, path: str, handlers: dict):
        self.path = path
        self.handlers = handlers
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, mode=0o700, exist_ok=True)
        if _answers(path):
            # Another live daemon (e.g. a second client in another network
            # namespace) owns the default name: take a name of our own.
            root, ext = os.path.splitext(path)
            path = self.path = f"{root}-{os.getpid()}{ext}"
        try:
            os.unlink(path)  # left behind by a daemon that died
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # 0600: root only
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(0.2)
            try:
                req = conn.recv(MAX_REQUEST).decode("ascii", "replace").strip()
                handler = self.handlers.get(req)
                if handler is None:
                    reply = {"error": f"unknown command {req[:32]!r}"}
                else:
                    reply = handler()
                # json on the first request only: a daemon nobody asks
                # keeps its ~0.1 MiB (the data path never needs it).
                import json
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError as e:
                LOG.debug("control connection: %s", e)

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def request(path: str, command: str, timeout: float = 3.0) -> dict:
    """Send `command` to the daemon at `path`; return its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    import json
    return json.loads(b"".join(chunks))

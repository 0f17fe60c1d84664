"""A model of the deployed C client (legacy protocol), for the lab.

Written from the legacy spec's description of that client's behaviour, not
from camex's client: it keeps what makes a server restart hard for it.
- ONE replay window per process (highest sequence accepted, 64-bit
  bitmap), over every datagram from the server whatever its sender prefix,
  never reset, not even by a reconnect: a datagram at or below what the
  window allows is dropped ("Dropped packet from server");
- its own counter from 0 on one sender prefix for the whole process;
- REGISTER at start, every 30 s and after every reconnect (manual: no
  answer expected; auto: the server answers with CONFIG, which gives the
  address);
- after 20 s with nothing at all from the server, a new socket (new source
  port) and a REGISTER; again every 5 s while the server stays silent.
The timers are arguments for tests that need them shorter; the defaults
are the spec's.

Instead of a TUN it has a packet source and sink: `send_packet` puts an
inner IPv4 packet into the tunnel, and it answers ICMP echo requests for its
own address itself (so a ping from elsewhere gets a reply), keeping echo
replies for `ping`-like probes. It runs as a thread of the test process
with its sockets made in a lab namespace (Namespace.socket).

`python -m lab.cclient --help` runs it standalone (inside a namespace:
`ip netns exec NAME python -m lab.cclient ...`).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import threading
import time
from typing import Callable, Optional

from .attacks import icmp_echo, inet_checksum, ipv4

MAGIC = b"CX2P"
REGISTER, DATA, CONFIG = 1, 2, 3
HEADER = 27
TAG = 16
REGISTER_EVERY = 30.0
SILENCE_RECONNECT = 20.0
RETRY_EVERY = 5.0
WINDOW = 64


def derive_key(passphrase: bytes) -> bytes:
    import hashlib
    return hashlib.blake2b(passphrase, digest_size=32).digest()


class Window:
    """The C client's one window: highest accepted, 64-bit bitmap."""

    def __init__(self):
        self.top = -1
        self.bitmap = 0

    def accept(self, seq: int) -> bool:
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = 1 if shift >= WINDOW else ((self.bitmap << shift) | 1) & ((1 << WINDOW) - 1)
            self.top = seq
            return True
        off = self.top - seq
        if off >= WINDOW or (self.bitmap >> off) & 1:
            return False
        self.bitmap |= 1 << off
        return True


class CClient:
    """One C-client process. ``socket_factory()`` makes a UDP socket (in the
    client's namespace); ``server`` is (address, port)."""

    def __init__(self, socket_factory: Callable[[], socket.socket], server: tuple,
                 passphrase: Optional[bytes] = None, local_ip: Optional[str] = None,
                 client_id: Optional[str] = None, register_every: float = REGISTER_EVERY,
                 silence_reconnect: float = SILENCE_RECONNECT, retry_every: float = RETRY_EVERY,
                 clock=time.monotonic):
        if (local_ip is None) == (client_id is None):
            raise ValueError("manual (local_ip) or auto (client_id), one of them")
        self.socket_factory = socket_factory
        self.server = server
        self.aead = None
        if passphrase:
            from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
            self.aead = ChaCha20Poly1305(derive_key(passphrase))
        self.prefix = os.urandom(4)
        self.seq = 0
        self.window = Window()
        self.auto = client_id is not None
        self.client_id = client_id
        self.address = local_ip  # auto: from CONFIG
        self.register_every = register_every
        self.silence_reconnect = silence_reconnect
        self.retry_every = retry_every
        self.clock = clock
        self.sock: Optional[socket.socket] = None
        self.lock = threading.Lock()
        self.dropped: list[float] = []      # times of "Dropped packet from server"
        self.reconnects: list[float] = []
        self.log: list[str] = []
        self.replies: dict = {}            # (ident, seq) -> time an echo reply arrived
        self.rx = self.tx = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ----------------------------------------------------------- wire
    def _frame(self, ptype: int, payload: bytes) -> bytes:
        if self.aead is None:
            return payload
        seq = self.seq
        self.seq += 1
        hdr = MAGIC + bytes([ptype]) + self.prefix + struct.pack("!Q", seq) + \
            struct.pack("!H", len(payload)) + struct.pack("!Q", seq)
        return hdr + self.aead.encrypt(self.prefix + struct.pack("!Q", seq), payload, hdr)

    def _open(self, data: bytes):
        """(type, plaintext) or None; records replay drops."""
        if self.aead is None:
            return (CONFIG if data[:4] == MAGIC else DATA), data
        if len(data) < HEADER + TAG or data[:4] != MAGIC:
            return None
        (length,) = struct.unpack("!H", data[17:19])
        if len(data) != length + HEADER + TAG:
            return None
        (seq,) = struct.unpack("!Q", data[19:27])
        try:
            pt = self.aead.decrypt(data[5:17], data[HEADER:], data[:HEADER])
        except Exception:  # noqa: BLE001 - InvalidTag: not for us
            return None
        if not self.window.accept(seq):
            self.dropped.append(self.clock())
            self._log("Dropped packet from server")
            return None
        return data[4], pt

    def _log(self, line: str) -> None:
        if len(self.log) < 10000:
            self.log.append(f"{self.clock():.3f} {line}")

    def _send(self, ptype: int, payload: bytes) -> None:
        with self.lock:
            frame = self._frame(ptype, payload)
            sock = self.sock
        try:
            sock.send(frame)
            self.tx += 1
        except OSError:
            pass  # the C client ignores send errors (ICMP unreachable while the server is down)

    def register(self) -> None:
        if self.auto:
            text = f"CX2P REGISTER MODE=AUTO CLIENT_ID={self.client_id}\n"
        else:
            text = f"CX2P REGISTER MODE=MANUAL LOCAL_IP={self.address}\n"
        self._send(REGISTER, text.encode())

    def _connect(self) -> None:
        sock = self.socket_factory()
        sock.setblocking(False)
        sock.connect(self.server)
        with self.lock:
            old, self.sock = self.sock, sock
        if old is not None:
            old.close()

    # ----------------------------------------------------------- data
    def send_packet(self, packet: bytes) -> None:
        """An inner packet, as the C client reads it from its TUN."""
        if self.sock is not None:
            self._send(DATA, packet)

    def ping(self, dst: str, ident: int, seq: int) -> None:
        if self.address:
            self.send_packet(icmp_echo(self.address, dst, ident, seq, b"camex-cclient"))

    def _inner(self, pkt: bytes) -> None:
        if len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] != 1 or self.address is None:
            return
        if pkt[16:20] != socket.inet_aton(self.address):
            return
        ihl = (pkt[0] & 15) * 4
        icmp = pkt[ihl:]
        if icmp[0] == 8:   # echo request: answer it, as the camera's stack would
            body = b"\0\0\0\0" + icmp[4:]
            body = b"\0\0" + struct.pack("!H", inet_checksum(body)) + body[4:]
            self.send_packet(ipv4(self.address, socket.inet_ntoa(pkt[12:16]), 1, body))
        elif icmp[0] == 0:
            ident, seq = struct.unpack("!HH", icmp[4:8])
            self.replies.setdefault((ident, seq), self.clock())

    def _control(self, text: bytes) -> None:
        words = text.decode("ascii", "replace").split()
        if len(words) < 2 or words[0] != "CX2P" or words[1] != "CONFIG":
            return
        kv = dict(w.split("=", 1) for w in words[2:] if "=" in w)
        if self.auto and "LOCAL_CIDR" in kv and "GATEWAY_IP" in kv:
            addr = kv["LOCAL_CIDR"].split("/")[0]
            if addr != self.address:
                self._log(f"configured {addr}")
            self.address = addr

    # ----------------------------------------------------------- loop
    def start(self) -> CClient:
        self._connect()
        self._thread = threading.Thread(target=self.run, name="cclient", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.sock is not None:
            self.sock.close()

    def run(self) -> None:
        if self.sock is None:
            self._connect()
        now = self.clock()
        last_rx = now
        self.register()
        next_register = now + self.register_every
        reconnect_at = now + self.silence_reconnect
        while not self._stop.is_set():
            now = self.clock()
            timeout = max(0.0, min(next_register, reconnect_at) - now)
            ready, _, _ = select.select([self.sock], [], [], min(timeout, 0.2))
            if ready:
                while True:
                    try:
                        data = self.sock.recv(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break   # ICMP port unreachable while the server is down
                    now = self.clock()
                    opened = self._open(data)
                    # Anything from the server (even a dropped datagram)
                    # counts as "heard from it" for the reconnect timer.
                    last_rx = now
                    reconnect_at = now + self.silence_reconnect
                    if opened is None:
                        continue
                    ptype, pt = opened
                    self.rx += 1
                    if ptype == DATA:
                        self._inner(pt)
                    elif ptype == CONFIG:
                        self._control(pt)
            now = self.clock()
            if now >= reconnect_at:
                self._log(f"nothing from the server for {now - last_rx:.0f} s: reconnecting")
                self.reconnects.append(now)
                self._connect()
                self.register()
                next_register = now + self.register_every
                reconnect_at = now + self.retry_every
            elif now >= next_register:
                self.register()
                next_register = now + self.register_every


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="model of the deployed C client (legacy)")
    p.add_argument("-s", "--server", required=True)
    p.add_argument("-p", "--port", type=int, required=True)
    p.add_argument("-k", "--psk", help="passphrase (encrypted mode)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-l", "--local-ip")
    g.add_argument("-n", "--name", help="client ID (auto mode)")
    p.add_argument("--ping", metavar="ADDR", help="ping this tunnel address every second")
    args = p.parse_args(argv)
    c = CClient(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
                (args.server, args.port), args.psk.encode() if args.psk else None,
                args.local_ip, args.name).start()
    n = 0
    try:
        while True:
            time.sleep(1)
            n += 1
            if args.ping:
                c.ping(args.ping, 0xC0C0, n & 0xFFFF)
            print(f"rx {c.rx} tx {c.tx} replies {len(c.replies)} dropped {len(c.dropped)} "
                  f"reconnects {len(c.reconnects)}", flush=True)
    except KeyboardInterrupt:
        c.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Lab helpers for the v2 protocol tests (tests/integration/test_v2_*.py).

On top of lab.daemons (starting camex), lab.attacks (Forger, Sniffer,
namespace sockets) and lab.faults (nft, UdpListener), this adds what the v2
tests need and nobody else does:

- V2Camex: the launcher with the daemon's default protocol (v2 when there
  is a passphrase) and a view of `camex status --json` by client;
- what a v2 datagram is on the wire (DATA, keepalive) when sniffed;
- a stateless source-port rewrite (nftables payload mangling in the
  client's namespace): the server sees the client's datagrams come from a
  new port mid-stream, as after a NAT rebinding, while the client's socket
  keeps its port;
- iperf3 per-second intervals (a stall shows as an interval with 0 bytes).
"""

from __future__ import annotations

import datetime
import time
from typing import Optional

from camex.v2 import wire

from .attacks import Captured, ns_socket
from .daemons import Camex
from .faults import UdpListener, nft
from .netns import LabProcess, Namespace, wait_until

# Passphrases of the v2 lab (the server's global one, and per-client ones).
GLOBAL = "v2-lab-global-passphrase"
PER_CLIENT = {"C1": "v2-lab-c1-own-passphrase", "C2": "v2-lab-c2-own-passphrase"}
WRONG = "not-the-passphrase"

ROAM_TABLE = "cxv2roam"
MARK_PORT = 9000  # UDP port of the marker listener on the receiving client


class V2Camex(Camex):
    """Camex launcher whose clients use the daemon's default protocol
    (`--protocol auto`: v2 against a camex server)."""

    def __init__(self, lab, **kw):
        kw.setdefault("protocol", None)
        super().__init__(lab, **kw)

    def clients(self, ns: Optional[Namespace] = None) -> dict:
        """The server's clients by tunnel address, from `camex status --json`."""
        st = self.status(ns or self.lab.server)
        return {c["address"]: c for c in st["clients"]}

    def server_drops(self) -> dict:
        return self.status(self.lab.server)["drops"]

    def client_port(self, ns: Namespace) -> int:
        """The local UDP port of the client in ``ns`` (its status)."""
        return self.status(ns)["local_port"]

    def restart_server(self, proc: LabProcess, **start_kw) -> tuple[LabProcess, float]:
        """SIGTERM the server, wait for its exit, start it again; returns the
        new process and the monotonic time it was ready ("listening on")."""
        proc.signal(15)
        rc = proc.wait(5)
        if rc != 0:
            raise AssertionError(f"server exited {rc} on SIGTERM\n{proc.tail()}")
        new = self.start_server(**start_kw)
        return new, time.monotonic()


def log_time(proc: LabProcess, pattern: str) -> float:
    """Wall-clock time (epoch seconds) of the first log line of ``proc``
    matching ``pattern``: the daemon's time stamps (1 ms resolution) date an
    event better than polling the log from the test does."""
    m = proc.find(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*" + pattern)
    if m is None:
        raise AssertionError(f"no /{pattern}/ in {proc.name}\n{proc.tail()}")
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


# ------------------------------------------------------------- wire view


def is_data(payload: bytes) -> bool:
    """A v2 DATA datagram (the header is 16 bytes, the tag 16)."""
    return len(payload) >= wire.DATA_MIN and payload[0] == wire.MARK and payload[1] == wire.T_DATA


def carries_packets(payload: bytes) -> bool:
    """A DATA datagram with at least one inner packet (not a keepalive)."""
    return is_data(payload) and len(payload) > wire.DATA_MIN


def receiver_index(payload: bytes) -> int:
    return int.from_bytes(payload[4:8], "little")


def data_from(captured: list[Captured], src: str, sport: Optional[int] = None) -> list[bytes]:
    """Payloads of the DATA datagrams with inner packets sent by ``src``."""
    return [c.payload for c in captured
            if c.src == src and (sport is None or c.sport == sport) and carries_packets(c.payload)]


# ------------------------------------------------------------ roaming


def source_port_rules(client_port: int, new_port: int, server_port: int,
                      table: str = ROAM_TABLE) -> str:
    """nft rules (stateless, before conntrack) that make the client's
    datagrams to the server leave from ``new_port`` and turn the replies to
    ``new_port`` back to the client's socket port."""
    return f"""
table ip {table} {{
    chain out {{
        type filter hook output priority -300; policy accept;
        udp sport {client_port} udp dport {server_port} udp sport set {new_port}
    }}
    chain back {{
        type filter hook prerouting priority -300; policy accept;
        udp sport {server_port} udp dport {new_port} udp dport set {client_port}
    }}
}}
"""


def move_source_port(ns: Namespace, client_port: int, new_port: int, server_port: int,
                     table: str = ROAM_TABLE) -> None:
    """Install (or replace, in one nft transaction) the source-port rewrite."""
    existing = ns.run(["nft", "list", "table", "ip", table]).returncode == 0
    nft(ns, (f"delete table ip {table}\n" if existing else "")
        + source_port_rules(client_port, new_port, server_port, table))


# ------------------------------------------------------------ traffic


class Marker:
    """Unique UDP datagrams from one client to another through the tunnel,
    and the listener that counts them on arrival."""

    def __init__(self, src: Namespace, dst: Namespace, port: int = MARK_PORT):
        self.dst_ip = dst.tunnel_ip
        self.port = port
        self.listener = UdpListener(dst, dst.tunnel_ip, port)
        self.sock = ns_socket(src, bind=(src.tunnel_ip, 0))
        self.seen: list[bytes] = []

    def send(self, text: str) -> bytes:
        data = text.encode()
        self.sock.sendto(data, (self.dst_ip, self.port))
        return data

    def collect(self, wait: float = 0.5) -> list[bytes]:
        self.seen += self.listener.drain(wait)
        return self.seen

    def count(self, data: bytes, wait: float = 0.5) -> int:
        return self.collect(wait).count(data)

    def wait_for(self, data: bytes, timeout: float = 5.0) -> None:
        wait_until(lambda: data in self.collect(0.1), timeout, f"marker {data!r} at {self.dst_ip}")

    def close(self) -> None:
        self.listener.close()
        self.sock.close()


def pings(src: Namespace, dst: str, count: int = 10):
    """``count`` pings 50 ms apart, every one answered (Namespace.ping gives
    late replies on a busy machine until a deadline); the PingResult."""
    r = src.ping(dst, count=count, interval=0.05, wait=2)
    assert (r.transmitted, r.received) == (count, count), r.output
    return r


def interval_bps(res) -> list[float]:
    """Per-interval (1 s) throughput of an iperf3 run (lab.traffic.IperfResult)."""
    return [iv["sum"]["bits_per_second"] for iv in res.raw.get("intervals", [])]


def udp_send_from(ns: Namespace, src: tuple, dst: tuple, payload: bytes) -> None:
    """One plain UDP datagram from a bound (address, port) in ``ns``."""
    s = ns_socket(ns, bind=src)
    try:
        s.sendto(payload, dst)
    finally:
        s.close()


__all__ = ["V2Camex", "log_time", "GLOBAL", "PER_CLIENT", "WRONG", "is_data", "carries_packets",
           "receiver_index", "data_from", "source_port_rules", "move_source_port", "Marker",
           "pings", "interval_bps", "udp_send_from"]

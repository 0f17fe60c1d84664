"""Faults for the lab: nftables rules (loss, counters, NAT), a reordering
relay, and the small measurements the fault, attack and load tests share.

What the kernel offers here and what it does not: this kernel has no netem,
so loss is an nftables rule (`numgen random mod 100 < N drop`), NAT is
nftables snat with conntrack, and reordering is done by `ReorderRelay`, a
userspace UDP relay in a middle namespace that holds back a random share of
datagrams and sends them after later ones (real reordering on the wire,
produced in userspace; stated so in the tests that use it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import socket
import sys
import threading
import time
from typing import Optional

from camex.daemon.control import request

from .attacks import ns_socket
from .capture import SO_RCVBUFFORCE
from .daemons import Camex
from .netns import Lab, LabError, Namespace, StarTopology, wait_until
from .proc import in_ns

# ---------------------------------------------------------------- nftables


def nft(ns: Namespace, script: str) -> None:
    """Load an nft script in namespace ``ns`` (raises with nft's message)."""
    path = os.path.join(ns.lab.logdir, f"nft-{ns.role}-{time.monotonic_ns()}.nft")
    with open(path, "w") as f:
        f.write(script)
    ns.run(["nft", "-f", path], check=True)


def nft_counters(ns: Namespace, table: str = "cxlab", family: str = "inet") -> dict:
    """name -> {"packets", "bytes"} of the named counters of a table."""
    res = ns.run(["nft", "-j", "list", "counters", "table", family, table], check=True)
    out = {}
    for item in json.loads(res.stdout)["nftables"]:
        c = item.get("counter")
        if c:
            out[c["name"]] = {"packets": c["packets"], "bytes": c["bytes"]}
    return out


def loss_rules(ifname: str, percent: int, table: str = "cxlab") -> str:
    """Drop ``percent`` % of the UDP datagrams entering and leaving link
    ``ifname`` (both directions of the tunnel's underlay), counted."""
    return f"""
table inet {table} {{
    counter lost_in {{}}
    counter lost_out {{}}
    counter seen_in {{}}
    counter seen_out {{}}
    chain inbound {{
        type filter hook prerouting priority -150; policy accept;
        iifname "{ifname}" meta l4proto udp counter name seen_in
        iifname "{ifname}" meta l4proto udp numgen random mod 100 < {percent} counter name lost_in drop
    }}
    chain outbound {{
        type filter hook postrouting priority 150; policy accept;
        oifname "{ifname}" meta l4proto udp counter name seen_out
        oifname "{ifname}" meta l4proto udp numgen random mod 100 < {percent} counter name lost_out drop
    }}
}}
"""


def _ifset(ifnames) -> str:
    names = [ifnames] if isinstance(ifnames, str) else list(ifnames)
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


def byte_counter_rules(ifnames, table: str = "cxlab", larger_than: int = 65535) -> str:
    """Count UDP bytes and packets in and out of the links ``ifnames`` (a
    name or a list), IPv4 fragments crossing them in either direction
    (non-zero offset or more-fragments set), and (`big_out`) UDP packets
    sent out longer than ``larger_than`` bytes (IP length). Output is
    counted before neighbour resolution, so answers to forged sources that
    do not exist are counted too."""
    ifs = _ifset(ifnames)
    return f"""
table inet {table} {{
    counter udp_in {{}}
    counter udp_out {{}}
    counter big_out {{}}
    counter frags {{}}
    chain inbound {{
        type filter hook prerouting priority -400; policy accept;
        iifname {ifs} ip frag-off & 0x3fff != 0 counter name frags
        iifname {ifs} meta l4proto udp counter name udp_in
    }}
    chain outbound {{
        type filter hook output priority -400; policy accept;
        oifname {ifs} ip frag-off & 0x3fff != 0 counter name frags
        oifname {ifs} meta l4proto udp counter name udp_out
        oifname {ifs} meta l4proto udp ip length > {larger_than} counter name big_out
    }}
    chain forwarded {{
        type filter hook forward priority -400; policy accept;
        oifname {ifs} ip frag-off & 0x3fff != 0 counter name frags
    }}
}}
"""


# ----------------------------------------------------------- daemon state


def status(sock_path: str, timeout: float = 5.0) -> dict:
    """The daemon's status document (the JSON `camex status --json` prints
    per daemon), read over its control socket."""
    return request(sock_path, "status", timeout=timeout)


def server_clients(sock_path: str) -> list[dict]:
    return status(sock_path)["clients"]


def client_entry(sock_path: str, address: str) -> Optional[dict]:
    for c in server_clients(sock_path):
        if c["address"] == address:
            return c
    return None


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LabError(f"no VmRSS for pid {pid}")


def settled_rss_kib(pid: int, seconds: float = 2.0, interval: float = 0.1) -> int:
    """The least VmRSS of `pid` over `seconds`: what a daemon keeps once a
    passing peak is gone (a state-file save's document, a burst's buffers;
    the loop hands freed heap back when it goes idle). A measurement
    window, not a wait for readiness."""
    end = time.monotonic() + seconds
    least = vm_rss_kib(pid)
    while time.monotonic() < end:
        time.sleep(interval)
        least = min(least, vm_rss_kib(pid))
    return least


def ctl_path(lab: Lab, name: str) -> str:
    return os.path.join(lab.logdir, f"{name}.sock")


# ------------------------------------------------------------------ traffic


class UdpListener:
    """A UDP socket bound in a namespace that collects what arrives."""

    def __init__(self, ns: Namespace, addr: str, port: int):
        self.sock = ns_socket(ns, bind=(addr, port))
        self.sock.setblocking(False)

    def drain(self, wait: float = 0.3) -> list[bytes]:
        out = []
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            r, _, _ = select.select([self.sock], [], [], max(0.0, left))
            if not r:
                if left <= 0:
                    return out
                continue
            try:
                out.append(self.sock.recv(65535))
            except BlockingIOError:
                pass

    def close(self):
        self.sock.close()


def tcp_transfer(src: Namespace, dst: Namespace, dst_ip: str, size: int,
                 port: int = 5301, timeout: float = 60.0) -> dict:
    """Send ``size`` random bytes over TCP from ``src`` to ``dst_ip`` in
    ``dst`` (an IPv4 or IPv6 address); return {seconds, bytes, ok (sha256
    equal)}."""
    data = random.Random(size).randbytes(size)
    family = socket.AF_INET6 if ":" in dst_ip else socket.AF_INET
    lsock = ns_socket(dst, family, socket.SOCK_STREAM, bind=(dst_ip, port))
    lsock.listen(1)
    lsock.settimeout(timeout)
    got = {}

    def receive():
        try:
            conn, _ = lsock.accept()
            conn.settimeout(timeout)
            h, n = hashlib.sha256(), 0
            with conn:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
            got["digest"], got["n"] = h.hexdigest(), n
        except OSError as e:
            got["error"] = e

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    csock = ns_socket(src, family, socket.SOCK_STREAM)
    csock.settimeout(timeout)
    t0 = time.monotonic()
    try:
        csock.connect((dst_ip, port))
        csock.sendall(data)
        csock.shutdown(socket.SHUT_WR)
        t.join(timeout)
    except OSError as e:  # a stalled transfer is a result, not a crash
        got.setdefault("error", e)
    finally:
        csock.close()
        lsock.close()
    seconds = time.monotonic() - t0
    return {"seconds": seconds, "bytes": got.get("n", 0),
            "ok": got.get("digest") == hashlib.sha256(data).hexdigest(),
            "error": got.get("error")}


def time_until_ping(ns: Namespace, dst: str, timeout: float, since: float) -> float:
    """Poll with single pings until ``dst`` answers; seconds since ``since``."""
    wait_until(lambda: ns.ping(dst, count=1, wait=0.3).ok, timeout, f"ping {dst} from {ns.name}",
               interval=0.05)
    return time.monotonic() - since


# --------------------------------------------------------------- reorder


class ReorderRelay:
    """A UDP relay in namespace ``ns`` between clients and one server that
    reorders: each datagram is, with probability ``share``, held back and
    sent after the next ``hold`` datagrams of the same direction. One
    upstream socket per client endpoint, as a NAT would have.

    Listens on (listen_ip, port), forwards to (server_ip, port).

    The relay must not lose datagrams itself: a datagram held behind a gap
    the relay made arrives any number of sequence numbers late, not
    ``hold``. (Seen in CI: with the default 208 KiB receive buffer and the
    test process short of CPU, the relay dropped 100 datagrams of a burst
    and released a held one after the gap, 102 behind: a correct replay
    drop for a 64-wide window.) So its buffers hold more than a test sends
    in flight, it drains each socket when woken, and `lost` counts what it
    lost anyway (receive-queue overflows reported by SO_RXQ_OVFL, sends
    refused for a full buffer), for tests to check.
    """

    BUF = 8 << 20  # bytes of socket buffer, each way; forced (the lab runs as root)
    DRAIN = 256  # datagrams read per socket per wake-up

    def __init__(self, ns: Namespace, listen_ip: str, server_ip: str, port: int,
                 share: float = 0.05, hold: int = 3, seed: int = 7):
        self.ns = ns
        self.server = (server_ip, port)
        self.share, self.hold = share, hold
        self.rng = random.Random(seed)
        self.front = self._socket(bind=(listen_ip, port))
        self.up: dict = {}  # client endpoint -> upstream socket
        self.back: dict = {}  # upstream fd -> client endpoint
        self.forwarded = 0
        self.reordered = 0
        self.send_dropped = 0
        self._overflows: dict = {}  # fd -> the kernel's cumulative drop count
        self._held: dict = {}  # direction key -> [(countdown, sendfn, data)]
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def lost(self) -> int:
        """Datagrams the relay itself lost (0 in a sound run)."""
        return sum(self._overflows.values()) + self.send_dropped

    def _socket(self, bind=None):
        s = ns_socket(self.ns, bind=bind)
        s.setblocking(False)
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),
                             (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                s.setsockopt(socket.SOL_SOCKET, force, self.BUF)
            except PermissionError:
                s.setsockopt(socket.SOL_SOCKET, plain, self.BUF)
        s.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
        return s

    def _recv(self, s):
        """One datagram and its sender; notes the socket's overflow count."""
        data, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(4))
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(value) >= 4:
                # The kernel's count, a u32 in the host's byte order.
                self._overflows[s.fileno()] = int.from_bytes(value[:4], sys.byteorder)
        return data, addr

    def _deliver(self, fn, *args):
        try:
            fn(*args)
        except BlockingIOError:
            self.send_dropped += 1
        except ConnectionRefusedError:
            pass  # the server is not up (yet): as on a real path

    def _send(self, key, fn, data):
        held = self._held.setdefault(key, [])
        still = []
        for countdown, f, d in held:
            if countdown <= 1:
                f(d)
            else:
                still.append((countdown - 1, f, d))
        if self.rng.random() < self.share:
            still.append((self.hold, fn, data))
            self.reordered += 1
        else:
            fn(data)
        self._held[key] = still
        self.forwarded += 1

    def _flush_old(self):
        # Nothing else came: release what is held (a reorder, not a loss).
        for held in self._held.values():
            for _, f, d in held:
                f(d)
            held.clear()

    def _upstream(self, client):
        s = self.up.get(client)
        if s is None:
            s = self._socket()
            s.connect(self.server)
            self.up[client] = s
            self.back[s.fileno()] = (client, s)
        return s

    def _from_client(self, data, client):
        up = self._upstream(client)
        self._send(("up", client), lambda d, up=up: self._deliver(up.send, d), data)

    def _from_server(self, data, s):
        client, _ = self.back[s.fileno()]
        self._send(("down", client),
                   lambda d, c=client: self._deliver(self.front.sendto, d, c), data)

    def _run(self):
        while not self._stop:
            socks = [self.front] + [s for _, s in self.back.values()]
            r, _, _ = select.select(socks, [], [], 0.05)
            if not r:
                self._flush_old()
                continue
            for s in r:
                for _ in range(self.DRAIN):
                    try:
                        data, addr = self._recv(s)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        continue  # ICMP for an earlier send: nothing to relay
                    if s is self.front:
                        self._from_client(data, addr)
                    else:
                        self._from_server(data, s)

    def close(self):
        self._stop = True
        self._thread.join(1)
        self.front.close()
        for s in self.up.values():
            s.close()


# Linux socket options Python's socket module does not name (asm-generic;
# SO_RCVBUFFORCE is lab.capture's).
_SO_SNDBUFFORCE = 32
_SO_RXQ_OVFL = 40


# ---------------------------------------------------------------- topology


class ChainTopology(StarTopology):
    """Like the star lab, but client C1 sits behind a middle namespace:

        c1 (192.168.1.2) -- mid (lan 192.168.1.1, wan 10.250.0.2) -- srv (10.250.0.1)
        c2 (10.250.1.2) ------------------------------------------- srv (10.250.1.1)

    ``mid`` forwards (a router): add NAT rules with `snat_rules`, or run a
    `ReorderRelay` there and point C1 at 192.168.1.1. Tunnel addresses as in
    the star lab (C1 10.0.0.2, C2 10.0.0.3); Camex(lab) works on it.
    """

    def __init__(self, logdir: Optional[str] = None):
        super().__init__(clients=2, logdir=logdir)

    def _attach_client(self, i: int, c: Namespace) -> str:
        if i != 0:
            return super()._attach_client(i, c)
        # C1: srv <-> mid (wan, the star's C1 subnet) and mid (lan) <-> c1.
        self.mid = self.add_ns("mid")
        self.veth(self.server, "mid", f"{c.server_ip}/24", self.mid, "wan", "10.250.0.2/24")
        self.veth(self.mid, "lan", "192.168.1.1/24", c, "eth0", "192.168.1.2/24")
        c.add_route("default", gateway="192.168.1.1")
        self.mid.sysctl("net.ipv4.ip_forward", "1")
        return "192.168.1.2"


def snat_rules(first_port: int, last_port: int, table: str = "cxnat") -> str:
    """Masquerade what leaves ``wan`` to source ports first..last (UDP)."""
    return f"""
table ip {table} {{
    chain post {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" meta l4proto udp snat to 10.250.0.2:{first_port}-{last_port}
    }}
}}
"""


def rebind_nat(ns: Namespace, first_port: int, last_port: int, table: str = "cxnat") -> None:
    """NAT rebinding: new port range, and every existing mapping forgotten
    (conntrack flushed), as a home router does after a reboot or timeout."""
    nft(ns, f"delete table ip {table}\n" + snat_rules(first_port, last_port, table))
    flush_conntrack(ns)


def flush_conntrack(ns: Namespace) -> None:
    from pyroute2 import Conntrack

    def flush():
        ct = Conntrack()
        try:
            ct.flush()
        finally:
            ct.close()

    in_ns(ns.name, flush)


# ------------------------------------------------------------ legacy only


class LegacyCamex(Camex):
    """Camex whose clients speak the legacy protocol only (`--protocol
    legacy`): the fault, attack and load suites are about the legacy wire
    format and its timers, whatever the default protocol becomes."""

    def client_argv(self, ns, **kw):
        extra = list(kw.pop("extra", ())) + ["--protocol", "legacy"]
        return super().client_argv(ns, extra=extra, **kw)


def legacy(cx: Camex) -> LegacyCamex:
    """The same launcher (lab, port, log level), legacy clients."""
    return LegacyCamex(cx.lab, port=cx.port, log_level=cx.log_level)

"""Network-namespace topologies for the camex lab.

In the spirit of the kernel's WireGuard selftest (netns.sh), but in Python and
through pyroute2 only (no `ip` subprocesses): named namespaces, veth pairs,
addresses, links up; processes started inside a namespace with their output
captured to files; readiness by polling, never by fixed sleeps; and a cleanup
that always runs (context manager, atexit, SIGTERM/SIGHUP).

Users: lab/demo.py (`make demo`), tests/integration (pytest fixtures), the VM
lab (lab/vm, inside a guest) and the benchmarks.

Namespaces are called ``cx<pid>-<role>`` (``cx<pid>k<n>-<role>`` for the n-th
lab of one process), so parallel pytest workers never collide and a stale
namespace can be traced to its (dead) owner: see clean_stale() and
``python -m lab.netns clean`` (``make lab-clean``).

Addresses of the star lab are those of the captures in tests/vectors/captures:
server 10.250.0.1 / 10.250.1.1, clients C1 10.250.0.2 and C2 10.250.1.2,
tunnel 10.0.0.2 (C1), 10.0.0.3 (C2), gateway 10.0.0.1.

The underlay between the peers (the outer path) is IPv4 by default; a
topology's ``family="ipv6"`` gives the veths IPv6 addresses only
(fd00:250:<i>::1 server side, ::2 client side, /64; no IPv4 address), and
``family="dual"`` both. IPv6 addresses are added without duplicate address
detection (IFA_F_NODAD) and waited for until none is tentative and each
has its local route, so a daemon can bind them and be reached at once.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Optional
from collections.abc import Iterable

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

# Re-exported: users import everything of the lab from lab.netns.
from .proc import (  # noqa: F401
    LabError,
    LabProcess,
    LabTimeout,
    PingResult,
    _ns_child,
    _ns_path,
    _thread_in_ns,
    parse_ping,
    wait_until,
)

__all__ = [
    "Lab", "StarTopology", "PointToPoint", "Namespace", "LabProcess", "PingResult",
    "LabError", "LabTimeout", "wait_until", "parse_ping", "clean_stale", "lab_namespaces",
    "PORT", "TUNNEL_GATEWAY", "TUNNEL_C1", "TUNNEL_C2", "TUNNEL_NET",
]

# Addresses of the captures' lab (tests/vectors/captures/README.md).
SERVER_UNDERLAY = ("10.250.0.1", "10.250.1.1")
CLIENT_UNDERLAY = ("10.250.0.2", "10.250.1.2")
UNDERLAY_PREFIX = 24
UNDERLAY6_PREFIX = 64
FAMILIES = ("ipv4", "ipv6", "dual")
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
RTN_LOCAL = 2        # linux/rtnetlink.h
TUNNEL_GATEWAY = "10.0.0.1"
TUNNEL_C1 = "10.0.0.2"
TUNNEL_C2 = "10.0.0.3"
TUNNEL_PREFIX = 24
TUNNEL_NET = "10.0.0.0/24"
PORT = 7000

NETNS_DIR = netns.NETNS_RUN_DIR  # lab.proc assumes the same directory
_NAME_RE = re.compile(r"^cx(\d+)(?:k\d+)?-[A-Za-z0-9_.-]+$")

# --------------------------------------------------------------------------
# namespaces


class Namespace:
    """One named network namespace of a Lab."""

    def __init__(self, lab: Lab, role: str, name: str):
        self.lab = lab
        self.role = role
        self.name = name
        # Filled in by the topologies: this namespace's underlay address, the
        # server address it reaches, its tunnel address and client ID.
        self.underlay: Optional[str] = None
        self.server_ip: Optional[str] = None
        # On a dual-stack or IPv6 underlay, both families' addresses
        # (None where the family is absent); underlay/server_ip are the
        # IPv6 ones on an IPv6-only underlay, the IPv4 ones otherwise.
        self.underlay4: Optional[str] = None
        self.server_ip4: Optional[str] = None
        self.underlay6: Optional[str] = None
        self.server_ip6: Optional[str] = None
        self.tunnel_ip: Optional[str] = None
        self.client_id: Optional[str] = None

    def __repr__(self) -> str:
        return f"<Namespace {self.name}>"

    # -- netlink
    def ipr(self) -> IPRoute:
        """An IPRoute bound to this namespace (use as a context manager)."""
        return IPRoute(netns=self.name)

    def links(self) -> dict[str, dict]:
        """ifname -> {index, up, mtu, kind-less attrs} of every link."""
        out = {}
        with self.ipr() as ipr:
            for link in ipr.get_links():
                out[link.get("ifname")] = {
                    "index": link["index"],
                    "up": bool(link["flags"] & 1),
                    "mtu": link.get("mtu"),
                    "operstate": link.get("operstate"),
                }
        return out

    def addresses(self, ifname: Optional[str] = None, family: int = socket.AF_INET) -> list:
        """Addresses (with prefix) of one link or of all links: IPv4 by
        default, IPv6 with ``family=socket.AF_INET6`` (link-local ones too)."""
        return [iface for iface, _flags in self._addresses(ifname, family)]

    def _addresses(self, ifname: Optional[str], family: int) -> list:
        with self.ipr() as ipr:
            kw = {}
            if ifname is not None:
                idx = ipr.link_lookup(ifname=ifname)
                if not idx:
                    return []
                kw["index"] = idx[0]
            return [
                (ipaddress.ip_interface(f"{a.get('address')}/{a['prefixlen']}"),
                 a.get("IFA_FLAGS") or a["flags"])
                for a in ipr.get_addr(family=family, **kw)
            ]

    def _is_local(self, address: str) -> bool:
        """Whether the route to ``address`` is a local one (RTN_LOCAL)."""
        with self.ipr() as ipr:
            try:
                r = ipr.route("get", dst=address)
            except NetlinkError:
                return False
        return bool(r) and r[0]["type"] == RTN_LOCAL

    def link_of(self, address: str) -> Optional[str]:
        """Name of the link that holds ``address``, IPv4 or IPv6 (None if none)."""
        ip = ipaddress.ip_address(address)
        with self.ipr() as ipr:
            for a in ipr.get_addr(family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET):
                if ipaddress.ip_address(a.get("address")) == ip:
                    return ipr.get_links(a["index"])[0].get("ifname")
        return None

    def routes(self) -> list[dict]:
        """IPv4 routes of the main table as {dst, dev, gateway}."""
        out = []
        with self.ipr() as ipr:
            names = {l["index"]: l.get("ifname") for l in ipr.get_links()}
            for r in ipr.get_routes(family=2, table=254):
                dst = r.get("dst")
                out.append(
                    {
                        "dst": f"{dst}/{r['dst_len']}" if dst else "default",
                        "dev": names.get(r.get("oif")),
                        "gateway": r.get("gateway"),
                    }
                )
        return out

    def link_up(self, ifname: str) -> None:
        with self.ipr() as ipr:
            idx = _lookup(ipr, ifname, self.name)
            ipr.link("set", index=idx, state="up")

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add an IPv4 or IPv6 address (an IPv6 one without duplicate
        address detection: usable at once, see wait_address)."""
        iface = ipaddress.ip_interface(cidr)
        kw = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
        with self.ipr() as ipr:
            idx = _lookup(ipr, ifname, self.name)
            ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                     **kw)

    def del_address(self, ifname: str, cidr: str) -> None:
        """Remove an address (the routes through it go with it)."""
        iface = ipaddress.ip_interface(cidr)
        with self.ipr() as ipr:
            idx = _lookup(ipr, ifname, self.name)
            ipr.addr("del", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def add_route(self, dst: str, gateway: Optional[str] = None, ifname: Optional[str] = None) -> None:
        """Add an IPv4 route ("default" or a CIDR) via a gateway and/or link."""
        kw = {}
        if dst != "default":
            net = ipaddress.IPv4Network(dst)
            kw.update(dst=str(net.network_address), dst_len=net.prefixlen)
        else:
            kw.update(dst="0.0.0.0", dst_len=0)
        if gateway:
            kw["gateway"] = gateway
        with self.ipr() as ipr:
            if ifname:
                kw["oif"] = _lookup(ipr, ifname, self.name)
            ipr.route("add", **kw)

    def mac(self, ifname: str) -> str:
        """The link-layer address of a link, as aa:bb:cc:dd:ee:ff."""
        with self.ipr() as ipr:
            idx = _lookup(ipr, ifname, self.name)
            return ipr.get_links(idx)[0].get("address")

    # -- /proc of the namespace
    def sysctl(self, key: str, value: Optional[str] = None) -> str:
        """Read (and with ``value`` write) a net sysctl of this namespace."""
        path = "/proc/sys/" + key.replace(".", "/")
        with _thread_in_ns(self.name):
            if value is not None:
                with open(path, "w") as f:
                    f.write(str(value))
            with open(path) as f:
                return f.read().strip()

    def bound_ports(self, proto: str = "udp") -> set[int]:
        """Local ports of sockets (IPv4 and IPv6): bound (udp) or listening (tcp)."""
        tables = []
        with _thread_in_ns(self.name):
            for table in (proto, proto + "6"):
                try:
                    with open(f"/proc/thread-self/net/{table}") as f:
                        tables.append(f.read().splitlines()[1:])
                except FileNotFoundError:  # IPv6 disabled
                    pass
        ports = set()
        for line in itertools.chain.from_iterable(tables):
            fields = line.split()
            local, state = fields[1], fields[3]
            if proto == "tcp" and state != "0A":  # 0A = LISTEN
                continue
            ports.add(int(local.rsplit(":", 1)[1], 16))
        return ports

    def snmp(self) -> dict[str, int]:
        """Counters of /proc/net/snmp here, as "Ip.FragCreates" -> value."""
        with _thread_in_ns(self.name):
            with open("/proc/thread-self/net/snmp") as f:
                lines = f.read().splitlines()
        out = {}
        for head, vals in zip(lines[::2], lines[1::2]):
            proto, names = head.split(":", 1)
            for k, v in zip(names.split(), vals.split(":", 1)[1].split()):
                out[f"{proto}.{k}"] = int(v)
        return out

    def snmp6(self) -> dict[str, int]:
        """Counters of /proc/net/snmp6 here, as "Ip6FragCreates" -> value."""
        with _thread_in_ns(self.name):
            with open("/proc/thread-self/net/snmp6") as f:
                return {k: int(v) for k, v in (line.split() for line in f if line.strip())}

    def socket(self, family: int, type: int, proto: int = 0) -> socket.socket:
        """A socket that lives in this namespace (e.g. AF_PACKET to watch a veth)."""
        with _thread_in_ns(self.name):
            return socket.socket(family, type, proto)

    # -- processes
    def spawn(self, argv: Iterable, name: Optional[str] = None, env: Optional[dict] = None,
              hosts: Optional[dict] = None) -> LabProcess:
        """Start a long-running process here; the lab stops it at cleanup.

        ``hosts`` ({name: [address, ...]}) gives the process an /etc/hosts
        of its own (a private mount namespace with that file bound over
        /etc/hosts; util-linux unshare and mount, execed in place, so the
        process keeps the pid): a name with A and AAAA records for it
        alone, the host's file untouched."""
        argv = list(argv)
        if hosts:
            path = os.path.join(self.lab.rundir, f"hosts-{self.role}-{len(self.lab.processes)}")
            with open(path, "w") as f:
                for host, addresses in hosts.items():
                    f.writelines(f"{a} {host}\n" for a in addresses)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$0" /etc/hosts && exec "$@"', path] + argv
        return self.lab._spawn(self, argv, name, env)

    def run(self, argv: Iterable, timeout: float = 60.0, check: bool = False) -> subprocess.CompletedProcess:
        """Run a command here to completion; returns text stdout/stderr."""
        argv = [str(a) for a in argv]
        with _ns_child(self.name) as in_ns_kw:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **in_ns_kw)
        if check and res.returncode != 0:
            raise LabError(f"{' '.join(argv)} in {self.name} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    # -- readiness and traffic
    def ping(self, dst: str, count: int = 1, interval: float = 0.2, wait: float = 1.0,
             size: Optional[int] = None, extra: Iterable = ()) -> PingResult:
        """ping from this namespace; never raises on loss.

        -W alone does not wait for a late reply once others came back
        (iputils then waits two RTTs only), so a busy machine would turn a
        slow reply into a loss; -w gives every reply until the deadline of
        ``count * interval + wait`` seconds, and ping still ends as soon as
        all replies are in.
        """
        deadline = max(1, math.ceil(count * interval + wait))
        argv = ["ping", "-n", "-q", "-c", count, "-i", interval, "-W", wait, "-w", deadline]
        if size is not None:
            argv += ["-s", size]
        argv += list(extra)
        res = self.run(argv + [dst], timeout=deadline + 5)
        return parse_ping(res.stdout + res.stderr)

    def wait_ping(self, dst: str, timeout: float = 10.0) -> PingResult:
        """Poll with single pings until one is answered."""
        last = {}

        def check():
            last["r"] = self.ping(dst, count=1, wait=0.5)
            return last["r"] if last["r"].ok else None

        return wait_until(
            check, timeout, f"ping {self.name} -> {dst}", interval=0.01,
            detail=lambda: last["r"].output if "r" in last else "",
        )

    def wait_address(self, address: str, ifname: Optional[str] = None, timeout: float = 10.0) -> str:
        """Wait until ``address`` (IPv4 or IPv6, no prefix) is on a link and
        packets to it are delivered here: an IPv6 one past duplicate address
        detection (not tentative) and with its local route. The kernel adds
        an IPv6 address's local route from a work item, after the address
        (untentative at once with NODAD) and its prefix route; a packet
        that comes between is forwarded, i.e. dropped. Return the link."""
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET

        def check():
            link = ifname if ifname is not None else self.link_of(address)
            if link is None:
                return None
            ready = any(a.ip == ip and not flags & IFA_F_TENTATIVE
                        for a, flags in self._addresses(link, family))
            return link if ready and self._is_local(address) else None

        return wait_until(check, timeout, f"address {address} in {self.name}")

    def wait_port(self, port: int, proto: str = "udp", timeout: float = 10.0) -> None:
        wait_until(lambda: port in self.bound_ports(proto), timeout, f"{proto} port {port} bound in {self.name}")


def _v6(text: str) -> str:
    """An IPv6 address in its canonical text (what camex status prints)."""
    return str(ipaddress.IPv6Address(text))


def _lookup(ipr: IPRoute, ifname: str, nsname: str) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise LabError(f"no link {ifname} in {nsname}")
    return idx[0]


# --------------------------------------------------------------------------
# labs and cleanup

_live_labs: set[Lab] = set()
_live_lock = threading.Lock()
_lab_counter = itertools.count()
_handlers_installed = False
_handler_pid = os.getpid()


def _cleanup_all() -> None:
    with _live_lock:
        labs = list(_live_labs)
    for lab in labs:
        lab.cleanup()


def _on_signal(signum, frame):
    signal.signal(signum, signal.SIG_DFL)
    if os.getpid() != _handler_pid:
        # A forked helper (pyroute2 forks to open sockets in a namespace)
        # inherits this handler: it must die quietly, never unwind into the
        # lab's `except`/`with` blocks and tear down the parent's lab.
        os._exit(128 + signum)
    # Turn the signal into an exception so that `with` blocks unwind (and
    # clean up) first; atexit catches whatever is left.
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    global _handlers_installed, _handler_pid
    if _handlers_installed:
        return
    _handlers_installed = True
    _handler_pid = os.getpid()
    atexit.register(_cleanup_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # Leave handlers of the host program (pytest, a benchmark) alone.
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_signal)


class Lab:
    """A set of namespaces and the processes started in them.

    Use as a context manager; cleanup() also runs at interpreter exit and on
    SIGTERM/SIGHUP. It stops every process the lab started and deletes its
    namespaces (which removes their veths and TUNs). Idempotent.
    """

    def __init__(self, logdir: Optional[str] = None):
        _install_handlers()
        clean_stale()
        n = next(_lab_counter)
        self.prefix = f"cx{os.getpid()}" + (f"k{n}" if n else "")
        # A log directory we made ourselves is removed at cleanup unless
        # keep_logs is set (or the `with` block ends in an exception).
        self._own_logdir = logdir is None
        self.keep_logs = False
        self.logdir = logdir or tempfile.mkdtemp(prefix=f"{self.prefix}-")
        os.makedirs(self.logdir, exist_ok=True)
        # Short per-lab directory for Unix sockets (108-byte path limit) and
        # pid files; a pytest tmp_path logdir can be too long for sockets.
        self.rundir = tempfile.mkdtemp(prefix=f"{self.prefix}-run-")
        self.namespaces: dict[str, Namespace] = {}
        self.processes: list[LabProcess] = []
        self._names = itertools.count()
        self._closed = False
        # Only the process that built the lab tears it down (not a fork of it).
        self._owner_pid = os.getpid()
        with _live_lock:
            _live_labs.add(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.keep_logs = True
        self.cleanup()
        return False

    # -- building
    def add_ns(self, role: str) -> Namespace:
        name = f"{self.prefix}-{role}"
        if role in self.namespaces:
            raise LabError(f"namespace role {role} exists")
        if os.path.exists(_ns_path(name)):
            raise LabError(f"namespace {name} already exists")
        netns.create(name)
        ns = Namespace(self, role, name)
        self.namespaces[role] = ns
        ns.link_up("lo")
        return ns

    def veth(self, a: Namespace, a_if: str, a_cidr: Optional[str], b: Namespace, b_if: str, b_cidr: Optional[str], mtu: int = 1500) -> None:
        """A veth pair between two namespaces, addressed and up."""
        with a.ipr() as ipr:
            ipr.link("add", ifname=a_if, kind="veth", mtu=mtu, peer={"ifname": b_if, "net_ns_fd": b.name, "mtu": mtu})
        for ns, ifname, cidr in ((a, a_if, a_cidr), (b, b_if, b_cidr)):
            if cidr:
                ns.add_address(ifname, cidr)
            ns.link_up(ifname)

    def _spawn(self, ns: Namespace, argv: list, name: Optional[str], env) -> LabProcess:
        if self._closed:
            raise LabError("lab is cleaned up")
        base = name or os.path.basename(str(argv[0]))
        label = f"{ns.role}-{base}-{next(self._names)}"
        proc = LabProcess(ns, argv, label, self.logdir, env)
        self.processes.append(proc)
        return proc

    # -- teardown
    def cleanup(self) -> None:
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._closed = True
        try:
            for proc in reversed(self.processes):
                proc.stop()
            for ns in self.namespaces.values():
                _kill_ns_processes(ns.name)
                _remove_ns(ns.name)
            shutil.rmtree(self.rundir, ignore_errors=True)
            if self._own_logdir and not self.keep_logs:
                shutil.rmtree(self.logdir, ignore_errors=True)
        finally:
            with _live_lock:
                _live_labs.discard(self)

    def alive(self) -> bool:
        return not self._closed


def _kill_ns_processes(name: str) -> None:
    """SIGKILL anything still inside one of our namespaces (e.g. a child that
    escaped its process group); a live process would keep the namespace.

    Each PID is pinned with a pidfd and checked to be in that namespace
    before the signal, so a PID reused by an outside process is spared.
    """
    try:
        ns_ino = os.stat(_ns_path(name)).st_ino
    except FileNotFoundError:
        return
    for pid in netns.ns_pids().get(name, []):
        if pid == os.getpid():
            continue
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == ns_ino:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            pass
        finally:
            os.close(fd)


def _remove_ns(name: str) -> None:
    try:
        netns.remove(name)
    except FileNotFoundError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_namespaces() -> list[str]:
    return sorted(n for n in netns.listnetns() if _NAME_RE.match(n))


def clean_stale(everything: bool = False) -> list[str]:
    """Delete lab namespaces whose owning process is gone (all with
    ``everything``); return their names."""
    removed = []
    for name in lab_namespaces():
        owner = int(_NAME_RE.match(name).group(1))
        if owner == os.getpid() and not everything:
            continue
        if everything or not _pid_alive(owner):
            _kill_ns_processes(name)
            _remove_ns(name)
            removed.append(name)
    return removed


# --------------------------------------------------------------------------
# topologies


class StarTopology(Lab):
    """Server namespace and N client namespaces (the captures' lab).

    Client i (c1, c2, ...) sits on its own veth: client 10.250.<i-1>.2/24 on
    ``eth0``, server 10.250.<i-1>.1/24 on ``c<i>``. Tunnel addresses are
    10.0.0.<i+1>, gateway 10.0.0.1.
    """

    def __init__(self, clients: int = 2, logdir: Optional[str] = None, family: str = "ipv4"):
        if family not in FAMILIES:
            raise LabError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
        super().__init__(logdir=logdir)
        self.family = family
        try:
            self.server = self.add_ns("srv")
            self.clients: list[Namespace] = []
            for i in range(clients):
                c = self.add_ns(f"c{i + 1}")
                c.server_ip = f"10.250.{i}.1"   # (_attach_client may change it)
                c.tunnel_ip = f"10.0.0.{i + 2}"
                c.client_id = f"C{i + 1}"
                c.underlay = self._attach_client(i, c)
                self.clients.append(c)
        except BaseException:
            self.cleanup()
            raise

    def _attach_client(self, i: int, c: Namespace) -> str:
        """Link client ``i`` (0-based) to the server; return its underlay
        address. Other topologies (lab.faults.ChainTopology) put a client
        elsewhere by overriding this."""
        v4 = self.family in ("ipv4", "dual")
        v6 = self.family in ("ipv6", "dual")
        if v4:
            c.server_ip4, c.underlay4 = f"10.250.{i}.1", f"10.250.{i}.2"
        if v6:
            c.server_ip6, c.underlay6 = _v6(f"fd00:250:{i}::1"), _v6(f"fd00:250:{i}::2")
        self.veth(self.server, f"c{i + 1}", None, c, "eth0", None)
        for ns, ifname, a4, a6 in ((self.server, f"c{i + 1}", c.server_ip4, c.server_ip6),
                                   (c, "eth0", c.underlay4, c.underlay6)):
            if a4:
                ns.add_address(ifname, f"{a4}/{UNDERLAY_PREFIX}")
            if a6:
                ns.add_address(ifname, f"{a6}/{UNDERLAY6_PREFIX}")
                ns.wait_address(a6, ifname)
        c.server_ip = c.server_ip4 or c.server_ip6
        return c.underlay4 or c.underlay6

    @property
    def c1(self) -> Namespace:
        return self.clients[0]

    @property
    def c2(self) -> Namespace:
        return self.clients[1]


class PointToPoint(Lab):
    """Two namespaces ``a`` (10.250.0.1, fd00:250:0::1) and ``b``
    (10.250.0.2, fd00:250:0::2) on one veth; ``family`` as StarTopology's."""

    def __init__(self, logdir: Optional[str] = None, mtu: int = 1500, family: str = "ipv4"):
        if family not in FAMILIES:
            raise LabError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
        super().__init__(logdir=logdir)
        self.family = family
        try:
            self.a = self.add_ns("a")
            self.b = self.add_ns("b")
            self.veth(self.a, "eth0", None, self.b, "eth0", None, mtu=mtu)
            for ns, host in ((self.a, 1), (self.b, 2)):
                if family != "ipv6":
                    ns.underlay4 = f"10.250.0.{host}"
                    ns.add_address("eth0", f"{ns.underlay4}/{UNDERLAY_PREFIX}")
                if family != "ipv4":
                    ns.underlay6 = _v6(f"fd00:250:0::{host}")
                    ns.add_address("eth0", f"{ns.underlay6}/{UNDERLAY6_PREFIX}")
                    ns.wait_address(ns.underlay6, "eth0")
                ns.underlay = ns.underlay4 or ns.underlay6
        except BaseException:
            self.cleanup()
            raise


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m lab.netns list|clean [--all]``."""
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else "list"
    if cmd == "list":
        for name in lab_namespaces():
            owner = int(_NAME_RE.match(name).group(1))
            print(f"{name}\t{'owner alive' if _pid_alive(owner) else 'stale'}")
        return 0
    if cmd == "clean":
        removed = clean_stale(everything="--all" in argv)
        for name in removed:
            print(f"removed {name}")
        return 0
    print("usage: python -m lab.netns list|clean [--all]", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

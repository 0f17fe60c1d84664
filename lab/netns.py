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

Addresses of the star lab are those of the captures in shared/vectors:
server 10.250.0.1 / 10.250.1.1, clients C1 10.250.0.2 and C2 10.250.1.2,
tunnel 10.0.0.2 (C1), 10.0.0.3 (C2), gateway 10.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import ipaddress
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Iterable, Optional, TypeVar

from pyroute2 import IPRoute, netns

# Addresses of the captures' lab (shared/vectors/README.md).
SERVER_UNDERLAY = ("10.250.0.1", "10.250.1.1")
CLIENT_UNDERLAY = ("10.250.0.2", "10.250.1.2")
UNDERLAY_PREFIX = 24
TUNNEL_GATEWAY = "10.0.0.1"
TUNNEL_C1 = "10.0.0.2"
TUNNEL_C2 = "10.0.0.3"
TUNNEL_PREFIX = 24
TUNNEL_NET = "10.0.0.0/24"
PORT = 7000

NETNS_DIR = netns.NETNS_RUN_DIR
_NAME_RE = re.compile(r"^cx(\d+)(?:k\d+)?-[A-Za-z0-9_.-]+$")

_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
# Resolved once at import: the preexec hook of a forked child must not load
# libraries or take locks.
_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_prctl = _libc.prctl

T = TypeVar("T")


class LabError(RuntimeError):
    """A lab step failed (namespace, link, process)."""


class LabTimeout(LabError):
    """A readiness condition did not come true in time."""


# --------------------------------------------------------------------------
# polling


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    detail: Optional[Callable[[], str]] = None,
) -> T:
    """Call ``check`` until it returns something truthy; return that value.

    Raises LabTimeout naming ``what`` (and ``detail()``, e.g. a log tail)
    after ``timeout`` seconds. The interval grows a little so that long waits
    do not spin.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:g} s waiting for {what}"
            if detail is not None:
                msg += "\n" + detail()
            raise LabTimeout(msg)
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


# --------------------------------------------------------------------------
# entering a namespace


def _ns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _enter(fd: int) -> None:
    if _setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def _thread_in_ns(name: str):
    """Move the calling thread into namespace ``name`` for the block.

    setns(2) acts on the calling thread only; files opened inside the block
    (/proc/thread-self/net/*, /proc/sys/net/*) belong to that namespace.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(_ns_path(name), os.O_RDONLY)
    try:
        _enter(target)
        try:
            yield
        finally:
            _enter(home)
    finally:
        os.close(target)
        os.close(home)


def _child_setup(ns_fd: int) -> Callable[[], None]:
    def setup() -> None:
        # Runs in the forked child before exec: join the namespace and die
        # with the lab if the lab is killed without a chance to clean up.
        if _setns(ns_fd, _CLONE_NEWNET) != 0:
            os._exit(126)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


# --------------------------------------------------------------------------
# processes


class LabProcess:
    """A process started inside a namespace; stdout and stderr go to files.

    The process leads its own session, so stop() also reaches its children.
    """

    def __init__(self, ns: "Namespace", argv: list[str], name: str, logdir: str, env=None):
        self.ns = ns
        self.argv = [str(a) for a in argv]
        self.name = name
        self.stdout_path = os.path.join(logdir, f"{name}.out")
        self.stderr_path = os.path.join(logdir, f"{name}.err")
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        fd = os.open(_ns_path(ns.name), os.O_RDONLY)
        try:
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=full_env,
                    pass_fds=(fd,),
                    preexec_fn=_child_setup(fd),
                    start_new_session=True,
                )
        finally:
            os.close(fd)
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"<LabProcess {self.name} pid={self.pid} ns={self.ns.name}>"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return _read_text(self.stdout_path)

    def stderr(self) -> str:
        return _read_text(self.stderr_path)

    def output(self) -> str:
        """stdout followed by stderr (daemons log to stderr)."""
        return self.stdout() + self.stderr()

    def tail(self, lines: int = 30) -> str:
        text = self.output().splitlines()[-lines:]
        return f"--- last lines of {self.name} (rc={self.returncode}) ---\n" + "\n".join(text)

    def find(self, pattern: str, start: int = 0) -> Optional[re.Match]:
        """First match of regex ``pattern`` in the output from offset ``start``."""
        return re.compile(pattern, re.M).search(self.output(), start)

    def count(self, pattern: str) -> int:
        return len(re.compile(pattern, re.M).findall(self.output()))

    def wait_for_line(
        self, pattern: str, timeout: float = 10.0, start: int = 0, alive: bool = True
    ) -> re.Match:
        """Poll the output until regex ``pattern`` appears (after ``start``).

        With ``alive`` a process that exits first fails the wait at once
        instead of after the timeout.
        """

        def check():
            m = self.find(pattern, start)
            if m is None and alive and not self.running():
                m = self.find(pattern, start)  # it may have printed and exited
                if m is None:
                    raise LabError(f"{self.name} exited before printing /{pattern}/\n{self.tail()}")
            return m

        return wait_until(check, timeout, f"/{pattern}/ in {self.name}", detail=self.tail)

    def mark(self) -> int:
        """Current length of the output, to wait for lines that come later."""
        return len(self.output())

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit; return the exit code (negative: killed by a signal)."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LabTimeout(f"{self.name} still running after {timeout:g} s\n{self.tail()}") from None

    def stop(self, timeout: float = 3.0) -> Optional[int]:
        """SIGTERM the process group, SIGKILL it after ``timeout``; reap."""
        if self.popen.poll() is None:
            _killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children left in the group (or a process that ignored SIGTERM).
        _killpg(self.pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.popen.poll()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------
# ping


@dataclasses.dataclass
class PingResult:
    transmitted: int
    received: int
    rtt_min_ms: Optional[float]
    rtt_avg_ms: Optional[float]
    rtt_max_ms: Optional[float]
    output: str

    @property
    def loss_pct(self) -> float:
        if self.transmitted == 0:
            return 100.0
        return 100.0 * (self.transmitted - self.received) / self.transmitted

    @property
    def ok(self) -> bool:
        return self.received > 0


_PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/")


def parse_ping(text: str) -> PingResult:
    m = _PING_COUNTS.search(text)
    tx, rx = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    r = _PING_RTT.search(text)
    rtt = tuple(float(x) for x in r.groups()) if r else (None, None, None)
    return PingResult(tx, rx, *rtt, output=text)


# --------------------------------------------------------------------------
# namespaces


class Namespace:
    """One named network namespace of a Lab."""

    def __init__(self, lab: "Lab", role: str, name: str):
        self.lab = lab
        self.role = role
        self.name = name
        # Filled in by the topologies: this namespace's underlay address, the
        # server address it reaches, its tunnel address and client ID.
        self.underlay: Optional[str] = None
        self.server_ip: Optional[str] = None
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

    def addresses(self, ifname: Optional[str] = None) -> list[ipaddress.IPv4Interface]:
        """IPv4 addresses (with prefix) of one link or of all links."""
        with self.ipr() as ipr:
            kw = {}
            if ifname is not None:
                idx = ipr.link_lookup(ifname=ifname)
                if not idx:
                    return []
                kw["index"] = idx[0]
            return [
                ipaddress.IPv4Interface(f"{a.get('address')}/{a['prefixlen']}")
                for a in ipr.get_addr(family=2, **kw)
            ]

    def link_of(self, address: str) -> Optional[str]:
        """Name of the link that holds IPv4 ``address`` (None if none)."""
        with self.ipr() as ipr:
            for a in ipr.get_addr(family=2):
                if a.get("address") == address:
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
        iface = ipaddress.IPv4Interface(cidr)
        with self.ipr() as ipr:
            idx = _lookup(ipr, ifname, self.name)
            ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)

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

    def socket(self, family: int, type: int, proto: int = 0) -> socket.socket:
        """A socket that lives in this namespace (e.g. AF_PACKET to watch a veth)."""
        with _thread_in_ns(self.name):
            return socket.socket(family, type, proto)

    # -- processes
    def spawn(self, argv: Iterable, name: Optional[str] = None, env: Optional[dict] = None) -> LabProcess:
        """Start a long-running process here; the lab stops it at cleanup."""
        return self.lab._spawn(self, list(argv), name, env)

    def run(self, argv: Iterable, timeout: float = 60.0, check: bool = False) -> subprocess.CompletedProcess:
        """Run a command here to completion; returns text stdout/stderr."""
        argv = [str(a) for a in argv]
        fd = os.open(_ns_path(self.name), os.O_RDONLY)
        try:
            res = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                pass_fds=(fd,),
                preexec_fn=_child_setup(fd),
            )
        finally:
            os.close(fd)
        if check and res.returncode != 0:
            raise LabError(f"{' '.join(argv)} in {self.name} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    # -- readiness and traffic
    def ping(self, dst: str, count: int = 1, interval: float = 0.2, wait: float = 1.0,
             size: Optional[int] = None, extra: Iterable = ()) -> PingResult:
        """ping from this namespace; never raises on loss."""
        argv = ["ping", "-n", "-q", "-c", count, "-i", interval, "-W", wait]
        if size is not None:
            argv += ["-s", size]
        argv += list(extra)
        deadline = count * interval + wait + 5
        res = self.run(argv + [dst], timeout=deadline)
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
        """Wait until ``address`` (IPv4, no prefix) is on a link; return the link."""

        def check():
            if ifname is not None:
                return ifname if any(str(a.ip) == address for a in self.addresses(ifname)) else None
            return self.link_of(address)

        return wait_until(check, timeout, f"address {address} in {self.name}")

    def wait_port(self, port: int, proto: str = "udp", timeout: float = 10.0) -> None:
        wait_until(lambda: port in self.bound_ports(proto), timeout, f"{proto} port {port} bound in {self.name}")


def _lookup(ipr: IPRoute, ifname: str, nsname: str) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise LabError(f"no link {ifname} in {nsname}")
    return idx[0]


# --------------------------------------------------------------------------
# labs and cleanup

_live_labs: "set[Lab]" = set()
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
    escaped its process group); a live process would keep the namespace."""
    pids = netns.ns_pids().get(name, [])
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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

    def __init__(self, clients: int = 2, logdir: Optional[str] = None):
        super().__init__(logdir=logdir)
        try:
            self.server = self.add_ns("srv")
            self.clients: list[Namespace] = []
            for i in range(clients):
                c = self.add_ns(f"c{i + 1}")
                c.underlay = f"10.250.{i}.2"
                c.server_ip = f"10.250.{i}.1"
                c.tunnel_ip = f"10.0.0.{i + 2}"
                c.client_id = f"C{i + 1}"
                self.veth(self.server, f"c{i + 1}", f"{c.server_ip}/{UNDERLAY_PREFIX}", c, "eth0", f"{c.underlay}/{UNDERLAY_PREFIX}")
                self.clients.append(c)
        except BaseException:
            self.cleanup()
            raise

    @property
    def c1(self) -> Namespace:
        return self.clients[0]

    @property
    def c2(self) -> Namespace:
        return self.clients[1]


class PointToPoint(Lab):
    """Two namespaces ``a`` (10.250.0.1) and ``b`` (10.250.0.2) on one veth."""

    def __init__(self, logdir: Optional[str] = None, mtu: int = 1500):
        super().__init__(logdir=logdir)
        try:
            self.a = self.add_ns("a")
            self.b = self.add_ns("b")
            self.a.underlay, self.b.underlay = "10.250.0.1", "10.250.0.2"
            self.veth(self.a, "eth0", "10.250.0.1/24", self.b, "eth0", "10.250.0.2/24", mtu=mtu)
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

"""The tunnels the bench compares, one small entry each.

Every entry brings its tunnel up in a fresh StarTopology (lab/netns.py):

    c1 (10.250.0.2) ---veth--- srv (10.250.0.1 | 10.250.1.1) ---veth--- c2 (10.250.1.2)

Point-to-point tunnels run between c1 (client side, where iperf3 and ping
run) and srv (server side); camex relays run c1 -> srv -> c2. Every tunnel
gets the same inner MTU (INNER_MTU) so that all carry the same TCP segment
size over the 1500-byte veth path.

An entry's up() returns an Up: where to send traffic, which daemon processes
to charge CPU and memory to, a one-line description of the configuration,
and the start-up time (daemons launched -> first echo reply through the
tunnel). It raises NotAvailable when the tunnel cannot be had here (a
missing package, a camex protocol not built yet); the report prints that
instead of figures.

Adding a camex mode is one CamexEntry(...) line at the end of this file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from typing import Optional

from camex.v2.wire import bulk_tso_max
from lab.daemons import CLIENT_READY, SERVER_READY, camex_binary
from lab.netns import LabError, LabProcess, Namespace, StarTopology, wait_until

from . import fetch, naive_tunnel
from .probe import first_reply

# Largest inner MTU that all tunnels fit into a 1500-byte path (wireguard
# needs 60+20 bytes of overhead, OpenVPN and tinc more with their padding);
# camex legacy encrypted would allow 1429, plaintext 1472.
INNER_MTU = 1420
# Inner addresses of the point-to-point peers: server side .1, client side .2.
PEER_NET = "10.252.0.{}"
PEER_SERVER_IN = PEER_NET.format(1)
PEER_CLIENT_IN = PEER_NET.format(2)
# Over an IPv6 underlay the outer header is 20 bytes longer: 1418 is the
# largest inner MTU camex v2 fits into a 1500-byte IPv6 path (its default
# there); the IPv6 peer gets the same so both IPv6 rows carry one segment
# size (2 bytes under their IPv4 twins' INNER_MTU).
INNER_MTU6 = 1418
# Inner IPv6 addresses of the IPv6 entries (a /64 per tunnel): the
# point-to-point peers' server side ::1 and client side ::2; camex relay
# clients c1, c2 (lab order) ::2, ::3.
INNER6 = "fd00:252::{}"
PSK = "camex-bench-passphrase"
CAMEX_PORT = 7000
UP_TIMEOUT = 20.0


class NotAvailable(Exception):
    """The tunnel cannot be brought up here; str() says why (one line)."""


@dataclasses.dataclass
class Up:
    client: Namespace  # iperf3 client and ping run here
    server: Namespace  # iperf3 server runs here
    target: str  # address of the server side through the tunnel
    daemons: list  # [(role, LabProcess)]: charged with CPU and memory
    desc: str
    startup_s: Optional[float] = None  # daemons launched -> first echo reply
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Entry:
    name: str
    group: str  # "baseline" | "camex" | "peer"
    packages: tuple = ()  # Debian packages it needs (versions go in the report)
    # Every iperf3 run with -R: the server side sends, the client side
    # (c1, where a camex client runs) receives. A client's receive path is
    # not its send path (batched reads, BULK reassembly): both are measured.
    reverse: bool = False
    # The lab's underlay (lab.netns FAMILIES): "ipv6" entries run over
    # IPv6-only veths and carry IPv6 inside (INNER_MTU6, INNER6).
    family: str = "ipv4"

    def up(self, lab: StarTopology) -> Up:
        raise NotImplementedError


# ---------------------------------------------------------------- helpers


def _need(*programs: str) -> None:
    for p in programs:
        if shutil.which(p) is None:
            raise NotAvailable(f"{p} is not installed (make bench installs it)")


def _configure_link(ns: Namespace, ifname: str, cidr: str, mtu: int = INNER_MTU,
                    timeout: float = UP_TIMEOUT, gso_max_size: int | None = None) -> None:
    """Wait for a daemon's TUN to appear, then address it, set its MTU (and
    its gso_max_size where given) and bring it up (pyroute2, not the
    daemon's `ip` hooks)."""
    wait_until(lambda: ifname in ns.links(), timeout, f"link {ifname} in {ns.name}")
    with ns.ipr() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=idx, mtu=mtu)
        if gso_max_size:
            ipr.link("set", index=idx, gso_max_size=gso_max_size)
    ns.add_address(ifname, cidr)
    ns.link_up(ifname)


def _alive_or_fail(procs: list) -> None:
    for p in procs:
        if not p.running():
            raise LabError(f"{p.name} exited\n{p.tail(15)}")


def _startup(ns: Namespace, target: str, t0: float, procs: list) -> float:
    """Seconds from t0 to the first echo reply; fails if a daemon died."""
    s = first_reply(ns.name, target, t0, timeout=UP_TIMEOUT)
    if s is None:
        _alive_or_fail(procs)
        raise LabError(f"no echo reply from {target} within {UP_TIMEOUT:g} s of start\n"
                       + "\n".join(p.tail(10) for p in procs))
    return s


def _tool(argv: list, input_text: Optional[str] = None) -> str:
    """Run a setup tool on the host (key and certificate generation); its stdout."""
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                         input=input_text, stdin=None if input_text else subprocess.DEVNULL,
                         timeout=60)
    if res.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))} failed: {res.stderr.strip()[:300]}")
    return res.stdout


def _write(path: str, text: str, mode: int = 0o600) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _ifname(lab: StarTopology, tag: str) -> str:
    """Interface name unique to this lab (global objects such as wireguard-go's
    UAPI socket are named after it); at most 15 characters."""
    return f"{tag}{os.getpid() % 100000}{lab.prefix[-1] if 'k' in lab.prefix else ''}"[:15]


# ---------------------------------------------------------------- baselines


class Raw(Entry):
    """The veth between c1 and srv without a tunnel: the ceiling."""

    def up(self, lab):
        return Up(lab.c1, lab.server, lab.c1.server_ip, [],
                  "no tunnel: veth c1 <-> srv, MTU 1500, kernel defaults (GRO/TSO on)", 0.0)


class RawRouted(Entry):
    """c1 -> srv -> c2 by kernel IP forwarding: the ceiling of a relay."""

    def up(self, lab):
        lab.server.sysctl("net.ipv4.ip_forward", "1")
        for ns, other in ((lab.c1, lab.c2), (lab.c2, lab.c1)):
            net = other.underlay.rsplit(".", 1)[0] + ".0/24"
            with ns.ipr() as ipr:
                ipr.route("add", dst=net, gateway=ns.server_ip)
        return Up(lab.c1, lab.c2, lab.c2.underlay, [],
                  "no tunnel: c1 -> srv -> c2 by kernel forwarding over two veths, MTU 1500", 0.0)


# ---------------------------------------------------------------- camex


@dataclasses.dataclass
class CamexEntry(Entry):
    """A camex mode: the server's and the clients' extra arguments.

    ``topology`` "relay": server in srv, clients in c1 and c2, traffic
    c1 -> c2 through the server. "p2p": server in srv owning a TUN (v2
    --server-tun, gateway 10.0.0.1), one client in c1, traffic c1 -> srv.
    ``server_args``/``client_args`` may use {psk}, {mtu}, {gateway}.
    """

    topology: str = "relay"
    server_args: tuple = ()
    client_args: tuple = ()
    label: str = ""
    # The protocol the client must report in `camex status --json`: an
    # option the daemon accepts but does not implement yet must not pass
    # for the real thing.
    protocol: str = "legacy"

    def _fmt(self, args) -> list:
        return [a.format(psk=PSK, mtu=self._mtu(), gateway="10.0.0.1") for a in args]

    def _mtu(self) -> int:
        return INNER_MTU6 if self.family == "ipv6" else INNER_MTU

    def _inner(self, lab, ns) -> tuple:
        """A client's -l and the address the tunnel reaches it by."""
        if self.family == "ipv6":
            addr = INNER6.format(lab.clients.index(ns) + 2)
            return f"{addr}/64", addr
        return f"{ns.tunnel_ip}/24", ns.tunnel_ip

    def up(self, lab):
        if self.family == "ipv6" and self.topology != "relay":
            raise NotAvailable("camex IPv6 entries run as a relay only")
        camex = camex_binary()
        mtu = self._mtu()
        conf = _write(os.path.join(lab.logdir, "camex.conf"),
                      "# camex bench: the server TUN's address (--server-tun)\n[defaults]\n"
                      f"gateway_ip=10.0.0.1\nmtu={INNER_MTU}\n")

        def ctl(ns):
            return os.path.join(lab.rundir, f"{ns.role}.sock")

        def client(ns):
            return ns.spawn([camex, "-M", "client", "-s", ns.server_ip, "-p", CAMEX_PORT,
                             "-l", self._inner(lab, ns)[0], "-t", mtu,
                             "--control-socket", ctl(ns), *self._fmt(self.client_args)],
                            name="camex-client")

        t_srv = time.monotonic()
        srv = lab.server.spawn([camex, "-M", "server", "-p", CAMEX_PORT, "-f", conf,
                                "--control-socket", ctl(lab.server),
                                *self._fmt(self.server_args)], name="camex-server")
        try:
            srv.wait_for_line(SERVER_READY, timeout=UP_TIMEOUT)
        except LabError as e:
            raise NotAvailable(_first_error(srv, e)) from None
        server_ready = time.monotonic() - t_srv
        daemons = [("server", srv)]
        if self.topology == "p2p":
            server_ns, target = lab.server, "10.0.0.1"
        else:
            # The far client first: start-up is then one client's launch to
            # a usable tunnel, as for point to point.
            server_ns, target = lab.c2, self._inner(lab, lab.c2)[1]
            far = client(lab.c2)
            daemons.append(("client c2", far))
            try:
                far.wait_for_line(CLIENT_READY, timeout=UP_TIMEOUT)
            except LabError as e:
                raise NotAvailable(_first_error(srv, e, [far])) from None
        t0, t0_wall = time.monotonic(), time.time()
        near = client(lab.c1)
        daemons.insert(1, ("client c1", near))
        procs = [p for _, p in daemons]
        try:
            startup = _startup(lab.c1, target, t0, procs)
        except LabError as e:
            raise NotAvailable(_first_error(srv, e, procs[1:])) from None
        spoken, cipher = _camex_protocol(camex, ctl(lab.c1))
        if spoken != self.protocol:
            raise NotAvailable(f"the client reports protocol {spoken!r}, not {self.protocol!r}: "
                               f"`{' '.join(self._fmt(self.client_args))}` is not implemented yet")
        path = "c1 -> srv" if self.topology == "p2p" else "c1 -> srv -> c2 (relay)"
        if self.reverse:
            path = ("srv -> c1" if self.topology == "p2p" else "c2 -> srv -> c1 (relay)") \
                + " (iperf3 -R: the client in c1 receives)"
        if self.family == "ipv6":
            path += ", IPv6 underlay and IPv6 inside"
        if cipher:
            path += f", {cipher}"
        desc = (f"camex {self.label}, {path}, tun MTU {mtu}; server "
                f"`{' '.join(self._fmt(self.server_args)) or '(defaults)'}`, clients "
                f"`-l ... -t {mtu} {' '.join(self._fmt(self.client_args))}`")
        extra = {"server_ready_s": round(server_ready, 4), "protocol": spoken, "cipher": cipher}
        up_at = _log_time(near, CLIENT_READY)
        if up_at is not None:
            # Launch -> "tunnel up" logged (interpreter start, imports, TUN and
            # netlink set-up); the rest of start-up is the first exchange.
            extra["tunnel_up_logged_s"] = round(up_at - t0_wall, 4)
        return Up(lab.c1, server_ns, target, daemons, desc, startup, extra)


def _log_time(proc: LabProcess, pattern: str) -> Optional[float]:
    """Wall-clock time (epoch s) of the first log line matching ``pattern``;
    camex log lines start with `YYYY-MM-DD HH:MM:SS,mmm`."""
    m = proc.find(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*" + pattern)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def _camex_protocol(camex: str, control_socket: str) -> tuple:
    """What a running camex client says it speaks (`camex status --json`):
    (protocol, its v2 session's cipher or None)."""
    res = subprocess.run([camex, "status", "--json", "--control-socket", control_socket],
                         capture_output=True, text=True, timeout=10)
    try:
        st = json.loads(res.stdout)[control_socket]
        return st.get("protocol", "?"), st.get("cipher")
    except (ValueError, KeyError, AttributeError):
        return f"? (camex status: {(res.stdout + res.stderr).strip()[:100]})", None


def _first_error(srv: LabProcess, err: Exception, procs=()) -> str:
    """One line for the report: the first error a daemon printed, else the wait's."""
    for p in (srv, *procs):
        if not p.running():
            lines = [l for l in p.output().splitlines() if l.strip()]
            msg = lines[-1] if lines else f"exited with {p.returncode}"
            return f"{p.name.split('-', 1)[1].rsplit('-', 1)[0]}: {msg[:200]}"
    return str(err).splitlines()[0][:200]


# ---------------------------------------------------------------- peers


def _wireguard_pair(lab, binary: str, tag: str):
    """Keys (wg genkey/pubkey) and a wireguard-go process in srv and c1 on
    interfaces named after `tag`: (ifs, keys, t0, server process, client
    process); ifs and keys by side, "s" and "c"; keys[side] = (private
    key file, public key)."""
    ifs = {"s": _ifname(lab, tag + "s"), "c": _ifname(lab, tag + "c")}
    keys = {}
    for side in ("s", "c"):
        priv = _tool(["wg", "genkey"]).strip()
        pub = _tool(["wg", "pubkey"], priv + "\n").strip()
        keys[side] = (_write(os.path.join(lab.logdir, f"{tag}-{side}.key"), priv + "\n"), pub)
    env = {"WG_PROCESS_FOREGROUND": "1"}
    t0 = time.monotonic()
    ps = lab.server.spawn([binary, "-f", ifs["s"]], name="wireguard-go", env=env)
    pc = lab.c1.spawn([binary, "-f", ifs["c"]], name="wireguard-go", env=env)
    return ifs, keys, t0, ps, pc


@dataclasses.dataclass
class WireguardGo(Entry):
    """wireguard-go between c1 and srv. ``fetched``: the binary bench.fetch
    unpacked from Debian's newest suite (TUN offloads, UDP GSO/GRO) instead
    of Debian 12's /usr/bin/wireguard-go (2022, one packet per TUN read)."""

    fetched: bool = False

    def _binary(self) -> tuple[str, str]:
        """(path, what it is for the description); NotAvailable if missing."""
        if not self.fetched:
            _need("wireguard-go")
            return shutil.which("wireguard-go") or "wireguard-go", \
                f"Debian 12 {pkg_version('wireguard-go')}"
        try:
            path, state = fetch.fetched_binary()
        except fetch.FetchError as e:
            raise NotAvailable(str(e)) from None
        return path, f"Debian {state['suite']} {state['debian_version']}"

    def up(self, lab):
        binary, origin = self._binary()
        _need("wg")
        version = fetch.parse_version_output(_tool([binary, "--version"])) or "?"
        ifs, keys, t0, ps, pc = _wireguard_pair(lab, binary, "wg")
        for side, ns, _me, peer_ip, peer_in in (
                ("s", lab.server, lab.c1.server_ip, lab.c1.underlay, PEER_CLIENT_IN),
                ("c", lab.c1, lab.c1.underlay, lab.c1.server_ip, PEER_SERVER_IN)):
            other = "c" if side == "s" else "s"
            sock = f"/var/run/wireguard/{ifs[side]}.sock"
            wait_until(lambda sock=sock: os.path.exists(sock), UP_TIMEOUT, sock)
            ns.run(["wg", "set", ifs[side], "private-key", keys[side][0], "listen-port", 51820,
                    "peer", keys[other][1], "endpoint", f"{peer_ip}:51820",
                    "allowed-ips", f"{peer_in}/32"], check=True)
            _configure_link(ns, ifs[side], f"{PEER_SERVER_IN if side == 's' else PEER_CLIENT_IN}/24")
        startup = _startup(lab.c1, PEER_SERVER_IN, t0, [ps, pc])
        return Up(lab.c1, lab.server, PEER_SERVER_IN, [("server", ps), ("client", pc)],
                  f"wireguard-go {version} (package {origin}"
                  + (", unpacked by make bench-peers" if self.fetched else "")
                  + f"; `{binary}`), keys from wg genkey, UDP 51820, MTU {INNER_MTU} "
                  "(Noise_IK, ChaCha20-Poly1305)", startup,
                  {"version": f"wireguard-go {version} ({origin})"})


class WireguardGo6(Entry):
    """wireguard-go over the IPv6 underlay with IPv6 inside: the IPv6 twin of
    WireguardGo (family "ipv6"), the peer beside camex's IPv6 entries."""

    def up(self, lab):
        _need("wireguard-go", "wg")
        inner = {"s": INNER6.format(1), "c": INNER6.format(2)}
        ifs, keys, t0, ps, pc = _wireguard_pair(lab, "wireguard-go", "wg6")
        for side, ns, peer_ip in (("s", lab.server, lab.c1.underlay),
                                  ("c", lab.c1, lab.c1.server_ip)):
            other = "c" if side == "s" else "s"
            sock = f"/var/run/wireguard/{ifs[side]}.sock"
            wait_until(lambda sock=sock: os.path.exists(sock), UP_TIMEOUT, sock)
            ns.run(["wg", "set", ifs[side], "private-key", keys[side][0], "listen-port", 51820,
                    "peer", keys[other][1], "endpoint", f"[{peer_ip}]:51820",
                    "allowed-ips", f"{inner[other]}/128"], check=True)
            _configure_link(ns, ifs[side], f"{inner[side]}/64", mtu=INNER_MTU6)
        startup = _startup(lab.c1, inner["s"], t0, [ps, pc])
        return Up(lab.c1, lab.server, inner["s"], [("server", ps), ("client", pc)],
                  f"wireguard-go {pkg_version('wireguard-go')} (Debian) over the IPv6 underlay, "
                  f"IPv6 inside, UDP 51820, MTU {INNER_MTU6} (Noise_IK, ChaCha20-Poly1305)",
                  startup)


@dataclasses.dataclass
class OpenVPN(Entry):
    cipher: str = "CHACHA20-POLY1305"

    def up(self, lab):
        _need("openvpn", "openssl")
        d = lab.logdir
        fps = {}
        for side in ("s", "c"):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                            "-subj", f"/CN=bench-{side}", "-keyout", f"{d}/ovpn-{side}.key",
                            "-out", f"{d}/ovpn-{side}.crt"], capture_output=True, check=True)
            out = subprocess.run(["openssl", "x509", "-in", f"{d}/ovpn-{side}.crt", "-noout",
                                  "-fingerprint", "-sha256"], capture_output=True, text=True,
                                 check=True).stdout
            fps[side] = out.strip().split("=", 1)[1]
        subprocess.run(["openvpn", "--genkey", "tls-crypt", f"{d}/ovpn-tc.key"],
                       capture_output=True, check=True)
        procs = {}
        t0 = time.monotonic()
        for side, ns, me, peer, inner in (
                ("s", lab.server, lab.c1.server_ip, lab.c1.underlay, PEER_SERVER_IN),
                ("c", lab.c1, lab.c1.underlay, lab.c1.server_ip, PEER_CLIENT_IN)):
            other = "c" if side == "s" else "s"
            role = "tls-server\ndh none" if side == "s" else "tls-client"
            conf = _write(f"{d}/ovpn-{side}.conf", f"""\
dev {_ifname(lab, 'ov' + side)}
dev-type tun
topology subnet
ifconfig {inner} 255.255.255.0
tun-mtu {INNER_MTU}
proto udp4
local {me}
lport 1194
remote {peer} 1194
{role}
cert {d}/ovpn-{side}.crt
key {d}/ovpn-{side}.key
peer-fingerprint {fps[other]}
tls-crypt {d}/ovpn-tc.key
tls-version-min 1.3
data-ciphers {self.cipher}
disable-dco
verb 3
""")
            procs[side] = ns.spawn(["openvpn", "--config", conf], name="openvpn")
        for p in procs.values():
            p.wait_for_line("Initialization Sequence Completed", timeout=UP_TIMEOUT)
        m = procs["c"].find(r"Data Channel: cipher '([^']*)'")
        if not m or m.group(1) != self.cipher:
            raise LabError(f"openvpn negotiated {m.group(1) if m else '?'}, wanted {self.cipher}")
        startup = _startup(lab.c1, PEER_SERVER_IN, t0, list(procs.values()))
        return Up(lab.c1, lab.server, PEER_SERVER_IN,
                  [("server", procs["s"]), ("client", procs["c"])],
                  f"OpenVPN {pkg_version('openvpn')} p2p UDP, TLS 1.3 with self-signed P-256 "
                  f"certs + peer-fingerprint, tls-crypt, data channel {m.group(1)}, "
                  f"tun-mtu {INNER_MTU}, disable-dco", startup)


@dataclasses.dataclass
class Fastd(Entry):
    method: str = "salsa2012+umac"

    def up(self, lab):
        _need("fastd")
        d = lab.logdir
        keys = {}
        for side in ("s", "c"):
            sec = subprocess.run(["fastd", "--generate-key", "--machine-readable"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            only = _write(f"{d}/fastd-{side}.secret", f'secret "{sec}";\n')
            pub = subprocess.run(["fastd", "-c", only, "--show-key", "--machine-readable"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            keys[side] = (sec, pub)
        procs, ifs = {}, {}
        t0 = time.monotonic()
        for side, ns, me, peer in (("s", lab.server, lab.c1.server_ip, lab.c1.underlay),
                                   ("c", lab.c1, lab.c1.underlay, lab.c1.server_ip)):
            other = "c" if side == "s" else "s"
            ifs[side] = _ifname(lab, "fd" + side)
            conf = _write(f"{d}/fastd-{side}.conf", f"""\
log level warn;
interface "{ifs[side]}";
mode tun;
method "{self.method}";
mtu {INNER_MTU};
secret "{keys[side][0]}";
bind {me}:10000;
peer "bench-{other}" {{
    key "{keys[other][1]}";
    remote {peer}:10000;
}}
""")
            procs[side] = ns.spawn(["fastd", "-c", conf], name="fastd")
            if side == "s":
                # A handshake that meets a closed port makes fastd back off
                # for tens of seconds: let the server side bind first.
                ns.wait_port(10000, "udp", timeout=UP_TIMEOUT)
        _configure_link(lab.server, ifs["s"], f"{PEER_SERVER_IN}/24")
        _configure_link(lab.c1, ifs["c"], f"{PEER_CLIENT_IN}/24")
        startup = _startup(lab.c1, PEER_SERVER_IN, t0, list(procs.values()))
        return Up(lab.c1, lab.server, PEER_SERVER_IN,
                  [("server", procs["s"]), ("client", procs["c"])],
                  f"fastd {pkg_version('fastd')} mode tun, method \"{self.method}\", "
                  f"UDP 10000, mtu {INNER_MTU}", startup)


class Tinc(Entry):
    def up(self, lab):
        _need("tincd")
        d = lab.logdir
        names = {"s": "benchs", "c": "benchc"}
        ifs = {}
        for side, me, inner in (("s", lab.c1.server_ip, PEER_SERVER_IN),
                                ("c", lab.c1.underlay, PEER_CLIENT_IN)):
            top = f"{d}/tinc-{side}"
            os.makedirs(f"{top}/hosts", exist_ok=True)
            ifs[side] = _ifname(lab, "tc" + side)
            lines = [f"Name = {names[side]}", "Mode = router", f"Interface = {ifs[side]}",
                     "Device = /dev/net/tun", "AddressFamily = ipv4", f"BindToAddress = {me}",
                     "Port = 655"]
            if side == "c":
                lines.append(f"ConnectTo = {names['s']}")
            _write(f"{top}/tinc.conf", "\n".join(lines) + "\n", 0o644)
            # PMTU discovery off: with it on, tinc 1.0 sends packets above the
            # probed minimum over its TCP meta connection for the first tens
            # of seconds; the inner MTU is known to fit, so go straight to UDP.
            _write(f"{top}/hosts/{names[side]}",
                   f"Address = {me}\nPort = 655\nSubnet = {inner}/32\nCipher = aes-256-cbc\n"
                   f"Digest = sha256\nMACLength = 16\nPMTUDiscovery = no\n", 0o644)
            subprocess.run(["tincd", "-c", top, "-K2048"], stdin=subprocess.DEVNULL,
                           capture_output=True, check=True)
        shutil.copy(f"{d}/tinc-s/hosts/{names['s']}", f"{d}/tinc-c/hosts/{names['s']}")
        shutil.copy(f"{d}/tinc-c/hosts/{names['c']}", f"{d}/tinc-s/hosts/{names['c']}")
        t0 = time.monotonic()
        ps = lab.server.spawn(["tincd", "-c", f"{d}/tinc-s", "-D", "-d1",
                               f"--pidfile={d}/tinc-s/pid"], name="tincd")
        pc = lab.c1.spawn(["tincd", "-c", f"{d}/tinc-c", "-D", "-d1",
                           f"--pidfile={d}/tinc-c/pid"], name="tincd")
        _configure_link(lab.server, ifs["s"], f"{PEER_SERVER_IN}/24")
        _configure_link(lab.c1, ifs["c"], f"{PEER_CLIENT_IN}/24")
        startup = _startup(lab.c1, PEER_SERVER_IN, t0, [ps, pc])
        return Up(lab.c1, lab.server, PEER_SERVER_IN, [("server", ps), ("client", pc)],
                  f"tinc {pkg_version('tinc')} Mode = router, RSA-2048 host keys, aes-256-cbc + "
                  f"sha256 (MACLength 16), UDP 655, PMTUDiscovery = no, tun MTU {INNER_MTU}",
                  startup)


def _naive(ns: Namespace, args: list, name: str) -> LabProcess:
    """bench/naive_tunnel.py with `args`, started in `ns` by this
    interpreter from the tree's root."""
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return ns.spawn([sys.executable, "-m", "bench.naive_tunnel", *args], name=name,
                    env={"PYTHONPATH": root})


@dataclasses.dataclass
class NaivePython(Entry):
    """bench/naive_tunnel.py: one packet per system call; `mode` "select"
    (no crypto), "threads" (no crypto, a blocked reader per direction),
    "aead" (threads, ChaCha20-Poly1305 per packet, X25519 at start),
    "bulk" (threads, TUN offloads, AES-256-GCM once per super-packet, UDP
    GSO/GRO: the floor under camex's BULK path) or "framed" (bulk with a
    header per datagram and camex's super-packet cap)."""

    mode: str = "select"

    _DESC = {
        "select": "select loop, one read/send and recv/write per packet, plaintext",
        "threads": "one thread per direction blocked in read/recv (no select), plaintext",
        "aead": "one thread per direction blocked in read/recv, every packet "
                "ChaCha20-Poly1305 (cryptography) under a key from one X25519 exchange",
        "bulk": "one thread per direction blocked in read/recv, TUN offloads (TCP "
                "super-packets up to 64 KiB), each sealed once with AES-256-GCM (cryptography) "
                "and sent as one UDP GSO train read whole by UDP GRO, no per-datagram header",
        "framed": "as bulk, with a 20-byte header on every datagram (glued in, gathered out) "
                  "and camex's cap on the super-packet (64,467 bytes)",
    }

    def up(self, lab):
        import sys

        ifs = {"s": _ifname(lab, "nvs"), "c": _ifname(lab, "nvc")}
        me = {"s": lab.c1.server_ip, "c": lab.c1.underlay}
        flags = [] if self.mode == "select" else [f"--{self.mode}"]
        t0 = time.monotonic()
        procs = {}
        for side, ns, other in (("s", lab.server, "c"), ("c", lab.c1, "s")):
            procs[side] = _naive(ns, [*flags, ifs[side], f"{me[side]}:9000", f"{me[other]}:9000"],
                                 "naive-tunnel")
        # --bulk: a super-packet and its train's counter and tag fit one GSO
        # send; --framed: camex's cap, for the same datagrams per frame.
        gso = {"bulk": naive_tunnel.BULK_GSO_MAX,
               "framed": bulk_tso_max(naive_tunnel.BULK_SEGMENT)}.get(self.mode)
        _configure_link(lab.server, ifs["s"], f"{PEER_SERVER_IN}/24", gso_max_size=gso)
        _configure_link(lab.c1, ifs["c"], f"{PEER_CLIENT_IN}/24", gso_max_size=gso)
        startup = _startup(lab.c1, PEER_SERVER_IN, t0, list(procs.values()))
        return Up(lab.c1, lab.server, PEER_SERVER_IN,
                  [("server", procs["s"]), ("client", procs["c"])],
                  f"bench/naive_tunnel.py: Python {sys.version.split()[0]} {self._DESC[self.mode]}, "
                  f"UDP 9000, MTU {INNER_MTU}", startup)


@dataclasses.dataclass
class NaiveRelay(Entry):
    """bench/naive_tunnel.py --relay between two --framed tunnels: the
    floor under camex's v2 relay of a TCP stream, c1 -> srv -> c2 as
    camex's relay rows run. ``forward``: the relay passes trains on
    unopened and the tunnels seal end to end (--relay --forward)."""

    forward: bool = False

    def up(self, lab):
        import sys

        # Inside, c1 and c2 as the point-to-point floor's client side
        # (.2) and the next address (.3); each tunnel sends all it reads
        # to the relay.
        inner = {lab.c1: PEER_NET.format(2), lab.c2: PEER_NET.format(3)}
        t0 = time.monotonic()
        relay = _naive(lab.server, ["--relay", *(["--forward"] if self.forward else []),
                                    *(f"{c.server_ip}:9000,{c.underlay}:9000"
                                      for c in (lab.c1, lab.c2))], "naive-relay")
        procs = [("server", relay)]
        gso = bulk_tso_max(naive_tunnel.BULK_SEGMENT)
        for ns, far in ((lab.c1, lab.c2), (lab.c2, lab.c1)):
            ifname = _ifname(lab, "nv" + ns.role[-1])
            end = ["--end", f"{far.underlay}:9000"] if self.forward else []
            proc = _naive(ns, ["--framed", *end, ifname, f"{ns.underlay}:9000",
                               f"{ns.server_ip}:9000"], "naive-tunnel")
            procs.append((f"client {ns.role}", proc))
            _configure_link(ns, ifname, f"{inner[ns]}/24", gso_max_size=gso)
        startup = _startup(lab.c1, inner[lab.c2], t0, [p for _, p in procs])
        work = ("passing it on unopened (the tunnels seal end to end, --end)" if self.forward
                else "gathering, opening, sealing again (AES-256-GCM), gluing and sending it "
                     "as one GSO train")
        return Up(lab.c1, lab.c2, inner[lab.c2], procs,
                  f"bench/naive_tunnel.py --relay{' --forward' if self.forward else ''}: Python "
                  f"{sys.version.split()[0]}, one thread on srv receiving each train whole (UDP "
                  f"GRO), {work}; --framed tunnels in c1 and c2; c1 -> srv -> c2 (relay), "
                  f"UDP 9000, MTU {INNER_MTU}", startup)


def pkg_version(pkg: str) -> str:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return res.stdout.strip() or "?"


# ---------------------------------------------------------------- the list

ENC = ("-e", "-k", "{psk}")
V2 = ("--protocol", "v2")
LEGACY = ("--protocol", "legacy")



def _both_ways(entry: Entry) -> tuple:
    """The entry as given (c1 sends) and its "-rev" twin (c1 receives)."""
    return entry, dataclasses.replace(entry, name=entry.name + "-rev", reverse=True)


ENTRIES: list[Entry] = [
    Raw("raw", "baseline"),
    RawRouted("raw-routed", "baseline"),
    NaivePython("naive-python", "baseline"),
    NaivePython("naive-python-threads", "baseline", mode="threads"),
    NaivePython("naive-python-aead", "baseline", mode="aead"),
    NaivePython("naive-python-bulk", "baseline", mode="bulk"),
    NaivePython("naive-python-bulk-framed", "baseline", mode="framed"),
    NaiveRelay("naive-python-framed-relay", "baseline"),
    NaiveRelay("naive-python-framed-forward", "baseline", forward=True),
    *_both_ways(CamexEntry("camex-v2-p2p", "camex", topology="p2p", protocol="v2",
                           label="v2 point to point (encrypted), server owns a TUN",
                           server_args=(*V2, "--server-tun", *ENC), client_args=(*V2, *ENC))),
    *_both_ways(CamexEntry("camex-v2-relay", "camex", protocol="v2", label="v2 relay (encrypted)",
                           server_args=(*V2, *ENC), client_args=(*V2, *ENC))),
    # The rows above run AES-256-GCM where the CPU has AES instructions
    # (--cipher auto); these, what a camera without them gets.
    CamexEntry("camex-v2-p2p-chacha", "camex", topology="p2p", protocol="v2",
               label="v2 point to point, ChaCha20-Poly1305, server owns a TUN",
               server_args=(*V2, "--server-tun", *ENC),
               client_args=(*V2, *ENC, "--cipher", "chacha20-poly1305")),
    CamexEntry("camex-v2-relay-chacha", "camex", protocol="v2",
               label="v2 relay, ChaCha20-Poly1305",
               server_args=(*V2, *ENC), client_args=(*V2, *ENC, "--cipher", "chacha20-poly1305")),
    # The command line users type: no --protocol on either side (auto). The
    # client must settle on v2; its figures should be those of the rows above.
    *_both_ways(CamexEntry("camex-default-p2p", "camex", topology="p2p", protocol="v2",
                           label="default command line (no --protocol: auto, settles on v2), "
                                 "point to point, server owns a TUN",
                           server_args=("--server-tun", *ENC), client_args=ENC)),
    *_both_ways(CamexEntry("camex-default-relay", "camex", protocol="v2",
                           label="default command line (no --protocol: auto, settles on v2), relay",
                           server_args=ENC, client_args=ENC)),
    CamexEntry("camex-p2p-enc", "camex", topology="p2p",
               label="legacy encrypted, point to point (server --server-tun)",
               server_args=("--server-tun", *ENC), client_args=(*LEGACY, *ENC)),
    CamexEntry("camex-p2p-plain", "camex", topology="p2p",
               label="legacy plaintext, point to point (server --server-tun)",
               server_args=("--server-tun",), client_args=LEGACY),
    CamexEntry("camex-relay-enc", "camex", label="legacy relay, encrypted",
               server_args=ENC, client_args=(*LEGACY, *ENC)),
    CamexEntry("camex-relay-plain", "camex", label="legacy relay, plaintext",
               client_args=LEGACY),
    WireguardGo("wireguard-go", "peer", ("wireguard-go", "wireguard-tools")),
    # The newest wireguard-go Debian serves (TUN offloads, UDP GSO/GRO), fetched by
    # `make bench-peers` into a cache outside the tree; "not available" without it.
    WireguardGo("wireguard-go-new", "peer", ("wireguard-tools",), fetched=True),
    OpenVPN("openvpn-chacha20", "peer", ("openvpn",), cipher="CHACHA20-POLY1305"),
    Fastd("fastd-salsa2012-umac", "peer", ("fastd",), method="salsa2012+umac"),
    Fastd("fastd-null", "peer", ("fastd",), method="null"),
    Tinc("tinc", "peer", ("tinc",)),
    # IPv6 over IPv6 (underlay and inside), each the twin of an IPv4 row
    # above; the report states their ratios (report.ipv6_cost).
    CamexEntry("camex-v2-relay-ipv6", "camex", protocol="v2", family="ipv6",
               label="v2 relay (encrypted)",
               server_args=(*V2, *ENC), client_args=(*V2, *ENC)),
    WireguardGo6("wireguard-go-ipv6", "peer", ("wireguard-go", "wireguard-tools"), family="ipv6"),
]

BY_NAME = {e.name: e for e in ENTRIES}

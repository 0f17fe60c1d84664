"""Starting camex daemons in lab namespaces, with readiness by log lines.

Follows the daemon CLI of notes/CONTRACTS.md:
  server: "listening on ..." once its UDP socket is bound;
  client: "tunnel up: dev tunX ..." once address, MTU and routes are set
          (in auto mode after the server's CONFIG).
Used by lab/demo.py, tests/integration and the benchmarks.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Optional
from collections.abc import Iterable

from .netns import PORT, LabError, LabProcess, Namespace, StarTopology

GLOBAL_PSK = "demo-global-secret"
C2_PSK = "per-client-secret-c2"

SERVER_READY = r"listening on"
CLIENT_READY = r"tunnel up: dev ([A-Za-z0-9_.-]+)"


def camex_binary() -> str:
    """The `camex` console script: $CAMEX, else the one beside this Python
    (the project venv), else the one on PATH."""
    env = os.environ.get("CAMEX")
    if env:
        return env
    beside = os.path.join(os.path.dirname(sys.executable), "camex")
    if os.path.exists(beside):
        return beside
    found = shutil.which("camex")
    if not found:
        raise LabError("camex is not installed (run `make` to build the venv)")
    return found


def auto_config(clients: dict[str, dict], defaults: Optional[dict] = None) -> str:
    """Text of a server configuration file (spec section).

    ``clients`` maps a client ID to its keys, e.g.
    {"C1": {"local_cidr": "10.0.0.2/24"}, "C2": {"local_cidr": ..., "psk": ...}};
    a list value repeats the key (route_cidr).
    """
    if defaults is None:
        defaults = {"gateway_ip": "10.0.0.1", "mtu": 1500, "route_cidr": "10.251.0.0/24"}
    lines = ["# written by lab/daemons.py", "[defaults]"]
    lines += _keys(defaults)
    for cid, keys in clients.items():
        lines += ["", f"[client {cid}]"] + _keys(keys)
    return "\n".join(lines) + "\n"


def _keys(keys: dict) -> list[str]:
    out = []
    for k, v in keys.items():
        for item in v if isinstance(v, (list, tuple)) else [v]:
            out.append(f"{k}={item}")
    return out


def vectors_config(c2_psk: Optional[str] = C2_PSK) -> str:
    """The server database of tests/vectors/captures/README.md (C2 with its own key)."""
    c2 = {"local_cidr": "10.0.0.3/24"}
    if c2_psk:
        c2["psk"] = c2_psk
    return auto_config({"C1": {"local_cidr": "10.0.0.2/24"}, "C2": c2})


def _secret_args(encrypt: bool, psk: Optional[str]) -> list[str]:
    """Passphrase and encryption options, the same for server and client."""
    return (["-k", psk] if psk else []) + (["-e"] if encrypt else [])


class Camex:
    """Starts camex server and clients in a StarTopology.

    Every process is owned by the lab (stopped at its cleanup). ``log_level``
    is passed to every daemon; tests use debug to have more to read on a
    failure.
    """

    def __init__(self, lab: StarTopology, port: int = PORT, log_level: str = "info",
                 protocol: Optional[str] = None):
        self.lab = lab
        self.port = port
        self.log_level = log_level
        # Clients' --protocol (None: the daemon's default, auto = v2 when
        # there is a passphrase, with legacy fallback). An explicit
        # --protocol in a call's `extra` comes later and wins.
        self.protocol = protocol
        self.binary = camex_binary()

    # -- files
    def write_config(self, text: str, name: str = "camex.conf") -> str:
        path = os.path.join(self.lab.logdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def control_socket(self, ns: Namespace) -> str:
        """Per-daemon control socket in the lab's run directory: the default
        /run/camex/<mode>-<port>.sock is shared by every namespace (and by
        parallel test workers)."""
        return os.path.join(self.lab.rundir, f"{ns.role}.sock")

    def state_dir(self) -> str:
        return os.path.join(self.lab.rundir, "state")

    def pid_file(self, ns: Namespace) -> str:
        return os.path.join(self.lab.rundir, f"{ns.role}.pid")

    def status(self, ns: Namespace) -> dict:
        """`camex status --json` of the daemon in ``ns`` (via its control socket)."""
        import json

        import subprocess

        path = self.control_socket(ns)
        res = subprocess.run([self.binary, "status", "--json", "--control-socket", path],
                             capture_output=True, text=True, timeout=10)
        if res.returncode != 0:
            raise LabError(f"camex status failed ({res.returncode}): {res.stdout}{res.stderr}")
        return json.loads(res.stdout)[path]

    # -- server
    def server_argv(self, encrypt: bool = False, psk: Optional[str] = None,
                    config: Optional[str] = None, extra: Iterable = ()) -> list[str]:
        argv = [self.binary, "-M", "server", "-p", str(self.port), "--log-level", self.log_level,
                "--control-socket", self.control_socket(self.lab.server),
                # Per lab: the default /var/lib/camex would be shared by
                # every test (and parallel workers).
                "--state-dir", self.state_dir()]
        if config:
            argv += ["-f", config]
        return argv + _secret_args(encrypt, psk) + [str(a) for a in extra]

    def start_server(self, encrypt: bool = False, psk: Optional[str] = None,
                     config: Optional[str] = None, extra: Iterable = (),
                     wait: bool = True, timeout: float = 15.0) -> LabProcess:
        proc = self.lab.server.spawn(self.server_argv(encrypt, psk, config, extra), name="camex-server")
        if wait:
            proc.wait_for_line(SERVER_READY, timeout=timeout)
            self.lab.server.wait_port(self.port, "udp", timeout=timeout)
        return proc

    # -- clients
    def client_argv(self, ns: Namespace, auto: bool = False, name: Optional[str] = None,
                    server: Optional[str] = None,
                    encrypt: bool = False, psk: Optional[str] = None,
                    local_cidr: Optional[str] = None, gateway: Optional[str] = None,
                    routes: Iterable[str] = (), extra: Iterable = ()) -> list[str]:
        argv = [self.binary, "-M", "client", "-s", server or ns.server_ip, "-p", str(self.port),
                "--log-level", self.log_level, "--control-socket", self.control_socket(ns)]
        if self.protocol:
            argv += ["--protocol", self.protocol]
        if auto:
            argv += ["-a", "-n", name or ns.client_id]
        else:
            argv += ["-l", local_cidr or f"{ns.tunnel_ip}/24"]
            if gateway:
                argv += ["-g", gateway]
        for r in routes:
            argv += ["-c", r]
        return argv + _secret_args(encrypt, psk) + [str(a) for a in extra]

    def start_client(self, ns: Namespace, wait: bool = True, timeout: float = 20.0,
                     hosts: Optional[dict] = None, **kw) -> LabProcess:
        """``hosts``: names the client resolves (Namespace.spawn)."""
        proc = ns.spawn(self.client_argv(ns, **kw), name="camex-client", hosts=hosts)
        if wait:
            self.wait_client(proc, timeout=timeout)
        return proc

    def wait_client(self, proc: LabProcess, timeout: float = 20.0) -> str:
        """Wait for "tunnel up"; return the TUN device name it reports."""
        m = proc.wait_for_line(CLIENT_READY, timeout=timeout)
        return m.group(1)

    @staticmethod
    def tun_dev(proc: LabProcess) -> Optional[str]:
        m = proc.find(CLIENT_READY)
        return m.group(1) if m else None


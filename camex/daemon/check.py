"""`camex check-config -f FILE` and `camex -M ... --check`: read everything a
start would read (the options, the configuration file, the passphrase
files), say what the daemon would serve, and name every problem, without
touching the network.

A check opens no socket, TUN or netlink connection and forks no helper: it
stops where a start would begin to bind, resolve or configure. What only
the network can tell (a port in use, a host name that does not resolve, an
interface that does not exist) is therefore not checked, and the report
says so.

Output: the summary on stdout (only when there is no error: a daemon that
would not start serves nothing); on stderr one line per problem, `error:
FILE:LINE: message` for the configuration file, `error: --option: message`
for the command line, and `warning: ...` for what a start accepts but
an operator probably did not mean. Exit 0 if the daemon would start, 1 if
not. Passphrases never appear, only where each comes from and, for the
global legacy key, the fingerprint the daemon logs at start-up.
"""

from __future__ import annotations

import os
import sys

from .config import ConfigError, ServerConfig, load_config, merge
from ..base.endpoint import fmt_host
from .loop import StartupError
from .options import ENV_PSK, Options, UsageError, parse_args

NOT_CHECKED = ("not checked (they need the network): the UDP port being free, "
               "interfaces, host names")


class Report:
    """What a check found: summary lines, warnings and errors (one line each)."""

    def __init__(self):
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def write(self, out, err) -> int:
        for w in self.warnings:
            print(f"warning: {w}", file=err)
        for e in self.errors:
            print(f"error: {e}", file=err)
        if self.errors:
            print(f"camex: {len(self.errors)} problem(s): the daemon would not start", file=err)
            return 1
        print("\n".join(self.lines), file=out)
        return 0


def main(argv) -> int:
    """`camex check-config [-f FILE] [server options]`: a server's --check
    where -M server and -p are implied (a port only names the control
    socket here)."""
    return check(["-M", "server", *argv[1:]], port_required=False)


def check(argv: list[str], port_required: bool = True, out=None, err=None) -> int:
    """Check a daemon's command line (argv without the program name, with or
    without --check), print the report, return the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    return run(argv, port_required).write(out, err)


def run(argv: list[str], port_required: bool = True, environ=None) -> Report:
    report = Report()
    problems: list[UsageError] = []
    try:
        opts = parse_args(argv, environ, problems=problems, port_required=port_required)
    except UsageError as e:         # what argparse itself refuses: nothing follows
        report.errors.append(str(e))
        return report
    report.errors += [str(p) for p in problems]
    if opts.mode == "server":
        _server(opts, report)
    else:
        _client(opts, report)
    return report


# ------------------------------------------------------------ server


def _server(opts: Options, report: Report) -> None:
    config = None
    config_note = ""
    if not opts.config_given and not os.path.exists(opts.config):
        # As at a start: the default file may be absent (manual clients only).
        config_note = f"none ({opts.config} does not exist: manual clients only)"
    else:
        try:
            config = load_config(opts.config)
        except ConfigError as e:
            report.errors += [str(p) for p in e.problems]
        else:
            report.warnings += config.warnings
            report.warnings += _config_warnings(config)
            config_note = f"{opts.config}, {len(config.clients)} client section(s)"
    if report.errors:
        return   # what follows needs good options and a good file

    # The decisions ServerDaemon.__init__ makes from them (same functions).
    from .server import protocols, tun_config
    try:
        served = protocols(opts, config)
        tun = tun_config(opts, config, served) if opts.server_tun else None
    except StartupError as e:
        report.errors.append(str(e))
        return
    if "v2" in served and opts.keylog:
        problem = keylog_problem(opts.keylog)
        if problem:
            report.errors.append(problem)
            return

    L = report.lines
    where = f"on {opts.bind_ip}" if opts.bind_ip else "on every address"
    if opts.bind_dev:
        where += f", device {opts.bind_dev}"
    port = f"UDP port {opts.port}" if opts.port else "UDP port (not given)"
    legacy = ""
    if "legacy" in served:
        legacy = ", legacy " + ("encrypted" if opts.encrypt else "plaintext")
    L.append(f"server: {port} {where}; protocols {' and '.join(served)}{legacy}; "
             f"at most {opts.max_clients} clients")
    L.append(f"  keys: {_global_key(opts)}" + _client_keys(config))
    L.append(f"  configuration: {config_note}")
    if config is not None:
        L.append(f"  defaults: {_profile(config.defaults)}")
        for sec in config.clients.values():
            key = "its own (psk=)" if sec.psk else ("global" if opts.psk else "none")
            L.append(f"  client {sec.id} (line {sec.line}): "
                     f"{_profile(merge(config.defaults, sec.profile))}; key {key}")
    if tun is not None:
        routes = ", ".join(map(str, tun.routes)) or "none"
        addrs = " ".join(str(a) for a in (tun.address, tun.address6) if a is not None)
        L.append(f"  server TUN: {addrs} mtu {tun.mtu}, routes {routes}, "
                 f"device {opts.tun_dev or '/dev/net/tun, else /dev/camex'}")
    if "v2" in served and opts.keylog:
        L.append(f"  keylog: v2 session keys appended to {opts.keylog} (debugging only)")
    sock = opts.control_socket
    if not opts.port and sock == f"/run/camex/{opts.mode}-0.sock":
        sock = f"/run/camex/{opts.mode}-PORT.sock (PORT: the -p of the start)"
    L.append(f"  control socket: {sock}")
    L.append(f"  {NOT_CHECKED}")


def _global_key(opts: Options) -> str:
    if opts.psk is None:
        return "no global passphrase"
    source = f"--psk-file {opts.psk_file}" if opts.psk_source == "--psk-file" else \
        (f"the environment ({ENV_PSK})" if opts.psk_source == ENV_PSK else "--psk")
    text = f"global passphrase from {source}"
    if opts.encrypt:
        # The line a start logs ("key fingerprint ..."): what to compare
        # with a client's; the passphrase itself never appears.
        from ..legacy import codec
        text += f", legacy key fingerprint {codec.fingerprint(codec.derive_key(opts.psk))}"
    return text


def _client_keys(config: ServerConfig | None) -> str:
    own = [sec.id for sec in config.clients.values() if sec.psk] if config else []
    return f"; own passphrases (psk=): {', '.join(own)}" if own else ""


def _profile(p) -> str:
    addrs = [str(a) for a in (p.local_cidr, getattr(p, "local_cidr6", None)) if a]
    parts = [f"address {' '.join(addrs)}" if addrs else "no address (manual clients)"]
    gws = [str(g) for g in (p.gateway_ip, getattr(p, "gateway_ip6", None)) if g]
    if gws:
        parts.append(f"gateway {' '.join(gws)}")
    if p.mtu:
        parts.append(f"mtu {p.mtu}")
    parts.append("routes " + (", ".join(map(str, p.routes)) or "none"))
    if p.allowed:
        parts.append("allowed sources " + ", ".join(map(str, p.allowed)))
    return ", ".join(parts)


def _config_warnings(config: ServerConfig) -> list[str]:
    """What a start accepts but an operator probably did not mean."""
    out = []
    owner: dict = {}
    for sec in config.clients.values():
        prof = merge(config.defaults, sec.profile)
        ip = prof.local_cidr.ip if prof.local_cidr else None
        if ip is None:
            if prof.local_cidr6 is not None:
                out.append(f"{config.path}:{sec.line}: [client {sec.id}] has only an IPv6 "
                           f"local_cidr: a legacy client with this ID gets no configuration "
                           f"(the legacy protocol carries IPv4 only; v2 clients are served)")
            continue
        first = owner.setdefault(ip, sec)
        if first is not sec:
            out.append(f"{config.path}:{sec.line}: [client {sec.id}] has the address {ip} "
                       f"of [client {first.id}] (line {first.line}): only one of them can "
                       f"be registered at a time")
        if prof.gateway_ip == ip:
            out.append(f"{config.path}:{sec.line}: [client {sec.id}]: gateway_ip {ip} is "
                       f"the client's own address")
    return out


def keylog_problem(path: str) -> str | None:
    """Why --keylog PATH could not be opened for appending, without creating
    it (a start creates it, mode 0600); None if it could."""
    if os.path.exists(path):
        if not os.path.isfile(path):
            return f"--keylog: {path} is not a regular file"
        if not os.access(path, os.W_OK):
            return f"--keylog: {path}: not writable"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"--keylog: {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--keylog: cannot create files in {parent}"
    return None


# ------------------------------------------------------------ client


def _client(opts: Options, report: Report) -> None:
    if report.errors:
        return
    if opts.keylog:
        problem = keylog_problem(opts.keylog)
        if problem:
            report.errors.append(problem)
            return
    L = report.lines
    local = ""
    if opts.bind_ip or opts.bind_dev:
        local = " from " + ", ".join(x for x in (opts.bind_ip, opts.bind_dev and
                                                 f"device {opts.bind_dev}") if x)
    L.append(f"client: to {fmt_host(opts.server_host, opts.port)}{local}")
    if opts.protocol == "legacy" or not opts.psk:
        proto = "legacy, " + ("encrypted" if opts.encrypt else "plaintext")
    elif opts.protocol == "v2":
        proto = "v2"
    else:
        proto = ("v2, falling back to legacy (" +
                 ("encrypted" if opts.encrypt else "plaintext") + ") if a server speaks only that")
    L.append(f"  protocol: {proto}")
    L.append(f"  keys: {_global_key(opts)}")
    if opts.auto:
        ident = opts.name or "the MAC address of the default-route interface (read at start)"
        L.append(f"  auto mode as client ID {ident}: address, gateway, routes and MTU "
                 f"from the server")
    else:
        routes = ", ".join(map(str, opts.routes)) or "none"
        addrs = " ".join(str(a) for a in (opts.local_cidr, opts.local_cidr6) if a)
        gws = " ".join(str(g) for g in (opts.gateway_ip, opts.gateway_ip6) if g)
        L.append(f"  address {addrs}, gateway {gws or 'none'}, "
                 f"routes {routes}, mtu {opts.mtu or 'default for the protocol'}")
    L.append(f"  TUN: {opts.tun_dev or '/dev/net/tun, else /dev/camex'}")
    if opts.keylog:
        L.append(f"  keylog: v2 session keys appended to {opts.keylog} (debugging only)")
    L.append(f"  control socket: {opts.control_socket}")
    L.append(f"  {NOT_CHECKED}")

"""Command-line options of the camex daemon: parsing and validation.

The short and long options of the original C tool keep their meaning exactly;
what camex adds (log level, passphrase from a file or the environment, v2
protocol switches) only adds. Every mistake becomes a UsageError whose text is
one line naming the option, which the daemon prints before exiting 1: on a
camera's serial console a usage dump would scroll the real problem away.

The passphrase is kept out of repr() and out of Options.describe(), the line
the daemon logs at start-up.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from camex import __version__
from camex.base.endpoint import parse_ip
from camex.daemon.parse import (DEFAULT_PATH, parse_gateway, parse_host_cidr, parse_int,
                               parse_ipv4, parse_mtu, parse_psk, parse_route)
from camex.legacy.codec import MAX_CLIENT_ID_LEN, MAX_CLIENTS, MAX_ROUTES

ENV_PSK = "CAMEX_PSK"
LOG_LEVELS = ("debug", "info", "warning", "error")
PROTOCOLS = ("auto", "legacy", "v2")
DEFAULT_KEEPALIVE = 25
DEFAULT_STATE_DIR = "/var/lib/camex"  # the unit's StateDirectory=camex
MAX_KEEPALIVE = 3600
DEFAULT_REKEY_AFTER = 120   # v2 REKEY_AFTER_TIME (docs/PROTOCOL.md section 7)
MIN_REKEY_AFTER = 10
MAX_REKEY_AFTER = 3600
MAX_MAX_CLIENTS = 1 << 20
IFNAMSIZ = 16  # Linux interface names are at most 15 bytes

# What camex itself sends as CLIENT_ID: conservative, so it survives any
# server's parser (the server side accepts more, see parse.parse_client_id).
_NAME_RE = re.compile(r"[A-Za-z0-9._:-]+")
_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?")


class UsageError(Exception):
    """A bad command line: one line naming the option, e.g.
    "--port: 70000 is out of range 1..65535"."""


# --cipher's values: "auto" lets a v2 session run AES-256-GCM where both
# ends have AES instructions; "chacha20-poly1305" never does.
CIPHERS = ("auto", "chacha20-poly1305")


class Options:
    """The parsed command line. A plain class rather than a dataclass:
    `dataclasses` imports `inspect`, 1.2 MiB of the daemon's resident memory.
    __slots__ lists every option, in describe()'s order."""

    __slots__ = ("mode", "auto", "name", "local_cidr", "gateway_ip", "server_host", "port",
              "bind_ip", "config", "routes", "mtu", "psk", "encrypt", "tun_dev", "pid_file",
              "bind_dev", "log_level", "protocol", "legacy", "server_tun", "keepalive",
              "rekey_after", "max_clients", "keylog", "control_socket", "extra", "config_given",
              "psk_source", "psk_file", "check", "state_dir", "local_cidr6", "gateway_ip6",
              "cipher")

    def __init__(self, mode: str = "client", auto: bool = False, name: str | None = None,
                 local_cidr: IPv4Interface | None = None,
                 gateway_ip: IPv4Address | None = None, server_host: str | None = None,
                 port: int = 0, bind_ip: str | None = None, config: str = DEFAULT_PATH,
                 routes: list | None = None, mtu: int | None = None,
                 psk: bytes | None = None, encrypt: bool = False, tun_dev: str | None = None,
                 pid_file: str | None = None, bind_dev: str | None = None,
                 log_level: str = "info", protocol: str = "auto", legacy: bool = True,
                 server_tun: bool = False, keepalive: int = DEFAULT_KEEPALIVE,
                 rekey_after: int = DEFAULT_REKEY_AFTER, max_clients: int = MAX_CLIENTS,
                 keylog: str | None = None,
                 control_socket: str = "", extra: dict | None = None,
                 config_given: bool = False, psk_source: str | None = None,
                 psk_file: str | None = None, check: bool = False,
                 state_dir: str = DEFAULT_STATE_DIR,
                 local_cidr6: IPv6Interface | None = None,
                 gateway_ip6: IPv6Address | None = None, cipher: str = "auto"):
        self.mode = mode
        self.auto = auto
        self.name = name
        self.local_cidr = local_cidr
        self.gateway_ip = gateway_ip
        self.server_host = server_host
        self.port = port
        self.bind_ip = bind_ip
        self.config = config
        self.routes = [] if routes is None else routes
        self.mtu = mtu
        self.psk = psk
        self.encrypt = encrypt
        self.tun_dev = tun_dev
        self.pid_file = pid_file
        self.bind_dev = bind_dev
        self.log_level = log_level
        self.protocol = protocol
        self.legacy = legacy
        self.server_tun = server_tun
        self.keepalive = keepalive
        self.rekey_after = rekey_after  # --rekey-after (v2; lab tests shorten it)
        self.max_clients = max_clients  # --max-clients: server, both protocols together
        self.keylog = keylog            # --keylog FILE: append v2 session keys (camex-dissect)
        self.control_socket = control_socket
        self.extra = {} if extra is None else extra
        # Beyond CONTRACTS.md (compatible additions):
        self.config_given = config_given  # -f was on the command line (else the default path)
        self.psk_source = psk_source      # "--psk", "--psk-file", "CAMEX_PSK" or None
        self.psk_file = psk_file          # so that SIGHUP can re-read it (read_psk_file)
        self.check = check                # --check: camex.check_config, then exit
        self.state_dir = state_dir        # --state-dir: server, clients kept across restarts
        # -l / -g with an IPv6 value (v2 only; local_cidr/gateway_ip are IPv4):
        self.local_cidr6 = local_cidr6
        self.gateway_ip6 = gateway_ip6
        # --cipher: "auto" (v2 data keys under AES-256-GCM where both ends
        # have AES instructions) or one of CIPHERS for every session.
        self.cipher = cipher

    def __repr__(self) -> str:
        return f"Options({self.describe()})"

    def describe(self) -> str:
        """One line for the start-up log; the passphrase shows only as <set>."""
        parts = []
        for name in self.__slots__:
            value = getattr(self, name)
            if name == "psk":
                value = f"<set, from {self.psk_source}>" if value else None
            elif name == "routes":
                value = ",".join(str(r) for r in value) or None
            elif name in ("extra", "local_cidr6", "gateway_ip6") and not value:
                continue
            parts.append(f"{name}={value}")
        return " ".join(parts)


class _Parser(argparse.ArgumentParser):
    """argparse with every complaint turned into a one-line UsageError."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        raise UsageError(_translate(message))

    def _get_formatter(self):
        # argparse's HelpFormatter learns the terminal width from shutil,
        # which imports zlib, bz2, lzma and fnmatch, and add_argument makes
        # a formatter for every option: 0.6 MiB resident for the daemon's
        # whole life, for help it never prints. The width comes from os.
        return self.formatter_class(prog=self.prog, width=_help_width())


def _help_width() -> int:
    """What shutil.get_terminal_size() would give, less argparse's margin of 2."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(columns - 2, 11)


def _translate(message: str) -> str:
    m = re.match(r"argument (\S+): (.*)", message, re.S)
    if m:
        opt = _long_name(m.group(1))
        detail = m.group(2)
        if detail.startswith("expected one argument"):
            detail = "needs a value"
        elif detail.startswith("ignored explicit argument"):
            detail = "takes no value"
        return _one_line(f"{opt}: {detail}")
    m = re.match(r"unrecognized arguments: (.*)", message, re.S)
    if m:
        first = m.group(1).split(" ")[0]
        if first.startswith("-") and first != "-":
            return _one_line(f"{first.split('=')[0]}: unknown option")
        return _one_line(f"unexpected argument {m.group(1)!r}")
    return _one_line(message)


def _long_name(spec: str) -> str:
    names = spec.split("/")
    return next((n for n in names if n.startswith("--")), names[0])


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="camex", allow_abbrev=False, add_help=False,
        description="camex: a minimal UDP/TUN tunnel (client or relay server).",
        epilog=f"The passphrase may also come from --psk-file FILE (mode 600) or the "
               f"environment variable {ENV_PSK}, which keep it out of the process list. "
               f"Other commands: camex status [--json | --prometheus [-o FILE]], "
               f"camex reload, camex check-config [-f FILE] [server options].",
    )
    a = p.add_argument
    a("-M", "--mode", metavar="client|server", help="role (required)")
    a("-a", "--auto", action="store_true", help="client: get the address from the server (auto mode)")
    a("-n", "--name", metavar="ID", help=f"client ID for auto mode (1..{MAX_CLIENT_ID_LEN} of A-Z a-z 0-9 . _ : -; default: MAC of the default-route interface)")
    a("-l", "--local-cidr", metavar="ADDR/NN", action="append", default=[],
      help="client: tunnel address with prefix (manual mode); one IPv4 and/or one IPv6 "
           "(IPv6: v2 only)")
    a("-g", "--gateway-ip", metavar="ADDR", action="append", default=[],
      help="client: tunnel gateway address; one per address family")
    a("-s", "--server-host", metavar="HOST", help="client: server name, IPv4 or IPv6 address")
    a("-p", "--port", metavar="PORT", help="UDP port (required)")
    a("-b", "--bind-ip", metavar="ADDRESS", help="local IPv4 or IPv6 address to bind "
      "(server default: :: and 0.0.0.0, both families)")
    a("-f", "--config", metavar="FILE", help=f"server configuration file (default {DEFAULT_PATH})")
    a("-c", "--route-cidr", metavar="NET/NN", action="append", default=[], help=f"client: route this network into the tunnel (repeatable, IPv4 or IPv6, at most {MAX_ROUTES} of each)")
    a("-t", "--mtu", metavar="MTU", help="tunnel MTU, 576..9000")
    a("-k", "--psk", metavar="PASS", help="passphrase, 1..63 bytes")
    a("-e", "--encrypt", action="store_true", help="encrypt (ChaCha20-Poly1305); both ends must agree")
    a("-T", "--tun-dev", metavar="PATH", help="TUN device (default /dev/net/tun, then /dev/camex)")
    a("-P", "--pid-file", metavar="FILE", help="write the process id here")
    a("-d", "--bind-dev", metavar="IFNAME", help="bind the UDP socket to this interface")
    a("-v", "--version", action="version", version=f"camex {__version__}", help="print the version and exit")
    a("-h", "--help", action="help", help="print this help and exit")
    a("--log-level", metavar="|".join(LOG_LEVELS), help="default info")
    a("--psk-file", metavar="FILE", help="read the passphrase from FILE (not readable by group/others)")
    a("--protocol", metavar="|".join(PROTOCOLS), help="default auto")
    a("--no-legacy", action="store_true", help="server: refuse legacy-protocol clients")
    a("--server-tun", action="store_true", help="server: own a TUN with the gateway address (v2)")
    a("--keepalive", metavar="SECONDS", help=f"v2 NAT keepalive, 0 disables (default {DEFAULT_KEEPALIVE})")
    a("--rekey-after", metavar="SECONDS", help=f"v2 session renewal interval, "
      f"{MIN_REKEY_AFTER}..{MAX_REKEY_AFTER} (default {DEFAULT_REKEY_AFTER}); both ends")
    a("--max-clients", metavar="N", help=f"server: clients registered at once, at most "
      f"(1..{MAX_MAX_CLIENTS}, default {MAX_CLIENTS}); a new one beyond is refused")
    a("--cipher", metavar="NAME", help="v2 data cipher: auto (AES-256-GCM when both ends "
      "have AES instructions, else ChaCha20-Poly1305; the default) or chacha20-poly1305")
    a("--keylog", metavar="FILE", help="append v2 session keys to FILE (mode 600) for "
      "camex-dissect --keylog; anyone who reads FILE reads the traffic: debugging only")
    a("--control-socket", metavar="PATH", help="default /run/camex/<mode>-<port>.sock")
    a("--check", action="store_true", help="check the options, the configuration file and "
      "the passphrase files, print what would run, and exit (0: good) without touching "
      "the network; `camex check-config -f FILE` is the same for a server")
    a("--state-dir", metavar="DIR", help=f"server: keep registered clients and counters "
      f"here across restarts (default {DEFAULT_STATE_DIR})")
    return p


def _one_per_family(o, option: str, what: str, attr: str, value) -> None:
    """Set o.<attr> (IPv4) or o.<attr>6 (IPv6) to `value`: one of each."""
    attr += "6" if value.version == 6 else ""
    if getattr(o, attr) is not None:
        raise UsageError(f"{option}: one IPv{value.version} {what} only, got "
                         f"{getattr(o, attr)} and {value}")
    setattr(o, attr, value)


def _check(option: str, fn, value):
    try:
        return fn(value)
    except ValueError as e:
        raise UsageError(_one_line(f"{option}: {e}")) from None


def _choice(option: str, value: str, choices) -> str:
    if value not in choices:
        raise UsageError(_one_line(f"{option}: {value!r} is not one of {', '.join(choices)}"))
    return value


def _nonempty(option: str, value: str | None) -> str | None:
    if value is not None and not value:
        raise UsageError(f"{option}: empty value")
    return value


def _name(text: str) -> str:
    if not 1 <= len(text) <= MAX_CLIENT_ID_LEN:
        raise ValueError(f"client ID must be 1..{MAX_CLIENT_ID_LEN} characters, got {len(text)}")
    if not (text.isascii() and _NAME_RE.fullmatch(text)):
        raise ValueError(f"{text!r} may hold only A-Z a-z 0-9 . _ : -")
    return text


def _server_host(text: str) -> str:
    """An IPv4 or IPv6 literal (brackets allowed; kept without them), or a
    host name (its AAAA and A records are tried at connect time)."""
    if ":" in text or text.startswith("["):
        return str(parse_ip(text))
    if text and all(c.isdigit() or c == "." for c in text):
        parse_ipv4(text)  # looks numeric: must be a real dotted quad
        return text
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if not name or len(name) > 253 or not name.isascii() or not all(
            len(lb) <= 63 and _LABEL_RE.fullmatch(lb) for lb in labels):
        raise ValueError(f"{text!r} is neither an IPv4 or IPv6 address nor a host name")
    return text


def _bind_ip(text: str) -> str:
    """A local IPv4 or IPv6 address (no scope id, not v4-mapped)."""
    if ":" not in text and not text.startswith("["):
        return str(parse_ipv4(text))
    return str(parse_ip(text))


def _bind_dev(text: str) -> str:
    raw = os.fsencode(text)
    if not 1 <= len(raw) < IFNAMSIZ or b"/" in raw or any(b <= 32 or b == 127 for b in raw):
        raise ValueError(f"{text!r} is not an interface name (1..{IFNAMSIZ - 1} bytes, "
                         f"no '/' or spaces)")
    return text


def read_psk_file(path: str, option: str = "--psk-file") -> bytes:
    """The passphrase in FILE: its bytes without one trailing newline.

    A file that group or others can read (or write) is refused: the key
    derives from this passphrase alone. Also used by the daemon on SIGHUP.
    """
    if "\0" in path:  # said here: os.open's own words for it changed in Python 3.13
        raise UsageError(_one_line(f"{option}: cannot open {path!r}: embedded null byte"))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as e:  # ValueError: a path that does not encode
        raise UsageError(_one_line(f"{option}: cannot open {path!r}: "
                                   f"{getattr(e, 'strerror', None) or e}")) from None
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the path names now
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(_one_line(f"{option}: {path!r} is not a regular file"))
        if st.st_mode & 0o066:
            raise UsageError(_one_line(
                f"{option}: {path!r} is accessible by group/others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run chmod 600 on it"))
        data = b""
        while len(data) <= 4096:  # a passphrase is tiny; do not slurp a huge file
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise UsageError(_one_line(f"{option}: cannot read {path!r}: {e.strerror or e}")) from None
    finally:
        os.close(fd)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    return _check(option, parse_psk, data)


def wants_aes(opts) -> bool:
    """Announce AES-256-GCM for v2 sessions? With --cipher auto (the
    default) where this CPU has AES instructions (camex.io.cpu)."""
    from camex.io.cpu import hardware_aes
    return getattr(opts, "cipher", "auto") == "auto" and hardware_aes()


def v2_timers(opts):
    """v2 timers from the options: --keepalive, and --rekey-after with the
    rejection limit kept 60 s beyond it (120/180 s by default, as
    documented). v2's modules are imported only for a daemon that speaks it."""
    from camex.v2.session import Timers
    return Timers(rekey_after_time=float(opts.rekey_after),
                  reject_after_time=float(opts.rekey_after) + 60.0,
                  keepalive=float(opts.keepalive))


def _passphrase(args, environ) -> tuple[bytes | None, str | None]:
    if args.psk is not None and args.psk_file is not None:
        raise UsageError("--psk-file: give either --psk or --psk-file, not both")
    if args.psk is not None:
        # fsencode gives back the exact bytes of argv (surrogateescape).
        return _check("--psk", parse_psk, os.fsencode(args.psk)), "--psk"
    if args.psk_file is not None:
        _nonempty("--psk-file", args.psk_file)
        return read_psk_file(args.psk_file), "--psk-file"
    env = environ.get(ENV_PSK)
    if env:  # an empty CAMEX_PSK= counts as unset, as shells make that easy
        raw = env if isinstance(env, bytes) else os.fsencode(env)
        return _check(ENV_PSK, parse_psk, raw), ENV_PSK
    return None, None


class _Gather:
    """`with gather:` around the checks of one option: with a problems
    list (camex check-config), a UsageError is kept and parsing goes on with
    the next option; without one (a start), it propagates at once."""

    __slots__ = ("problems",)

    def __init__(self, problems: list | None):
        self.problems = problems

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is UsageError and self.problems is not None:
            self.problems.append(exc)
            return True
        return False


def parse_args(argv: list[str] | None = None, environ=None, *,
               problems: list | None = None, port_required: bool = True) -> Options:
    """Parse and validate argv (without the program name).

    environ defaults to os.environ (only CAMEX_PSK is read). Raises
    UsageError; -h/--help and -v/--version print and raise SystemExit(0).

    With a `problems` list (camex check-config), every option is checked:
    each bad one appends its UsageError and keeps its default, and the
    rules that relate options to each other are checked only if each
    option on its own was good (they would mostly repeat the first
    complaint). A mistake argparse itself finds (an unknown option, a
    missing value) still raises: what follows it cannot be read.
    port_required=False lets --port be absent (Options.port is then 0).
    """
    if argv is None:
        argv = sys.argv[1:]
    if environ is None:
        environ = os.environ
    args = build_parser().parse_args(list(argv))
    gather = _Gather(problems)
    before = len(problems) if problems is not None else 0

    if args.mode is None:
        raise UsageError("--mode: required (client or server)")
    mode = _choice("--mode", args.mode, ("client", "server"))
    port = 0
    with gather:
        if args.port is None:
            if port_required:
                raise UsageError("--port: required (1..65535)")
        else:
            port = _check("--port", lambda v: parse_int(v, 1, 65535, "port"), args.port)

    o = Options(mode=mode, port=port, auto=args.auto, encrypt=args.encrypt, check=args.check)
    if args.name is not None:
        with gather:
            o.name = _check("--name", _name, args.name)
    for text in args.local_cidr:
        with gather:
            _one_per_family(o, "--local-cidr", "address", "local_cidr",
                            _check("--local-cidr", parse_host_cidr, text))
    for text in args.gateway_ip:
        with gather:
            gw = _check("--gateway-ip", parse_gateway, text)
            _one_per_family(o, "--gateway-ip", "gateway", "gateway_ip", gw)
            local = o.local_cidr6 if gw.version == 6 else o.local_cidr
            if local is not None and gw == local.ip:
                raise UsageError(f"--gateway-ip: {gw} is the local address itself")
    if args.server_host is not None:
        with gather:
            o.server_host = _check("--server-host", _server_host, args.server_host)
    if args.bind_ip is not None:
        with gather:
            o.bind_ip = _check("--bind-ip", _bind_ip, args.bind_ip)
    if args.config is not None:
        with gather:
            o.config = _nonempty("--config", args.config)
            o.config_given = True
    with gather:
        for text in args.route_cidr:
            with gather:
                route = _check("--route-cidr", parse_route, text)
                if route in o.routes:
                    raise UsageError(f"--route-cidr: {route} given twice")
                o.routes.append(route)
        for version in (4, 6):
            n = sum(r.version == version for r in o.routes)
            if n > MAX_ROUTES:
                raise UsageError(f"--route-cidr: at most {MAX_ROUTES} routes, got {n} "
                                 f"(IPv{version})")
    if args.mtu is not None:
        with gather:
            o.mtu = _check("--mtu", parse_mtu, args.mtu)
    with gather:
        o.tun_dev = _nonempty("--tun-dev", args.tun_dev)
    with gather:
        o.pid_file = _nonempty("--pid-file", args.pid_file)
    if args.bind_dev is not None:
        with gather:
            o.bind_dev = _check("--bind-dev", _bind_dev, args.bind_dev)
    if args.log_level is not None:
        with gather:
            o.log_level = _choice("--log-level", args.log_level.lower(), LOG_LEVELS)
    if args.protocol is not None:
        with gather:
            o.protocol = _choice("--protocol", args.protocol, PROTOCOLS)
    o.legacy = not args.no_legacy
    o.server_tun = args.server_tun
    if args.keepalive is not None:
        with gather:
            o.keepalive = _check("--keepalive", lambda v: parse_int(
                v, 0, MAX_KEEPALIVE, "seconds"), args.keepalive)
    if args.rekey_after is not None:
        with gather:
            o.rekey_after = _check("--rekey-after", lambda v: parse_int(
                v, MIN_REKEY_AFTER, MAX_REKEY_AFTER, "seconds"), args.rekey_after)
    if args.max_clients is not None:
        with gather:
            o.max_clients = _check("--max-clients", lambda v: parse_int(
                v, 1, MAX_MAX_CLIENTS, "clients"), args.max_clients)
    if args.cipher is not None:
        with gather:
            if args.cipher not in CIPHERS:
                raise UsageError(f"--cipher: {args.cipher!r} is not one of {', '.join(CIPHERS)}")
            o.cipher = args.cipher
    if args.keylog is not None:
        with gather:
            o.keylog = _nonempty("--keylog", args.keylog)
            if os.path.isdir(o.keylog):
                raise UsageError(f"--keylog: {o.keylog} is a directory")
    if args.control_socket is not None:
        with gather:
            o.control_socket = _nonempty("--control-socket", args.control_socket)
    if not o.control_socket:
        o.control_socket = f"/run/camex/{mode}-{port}.sock"
    if args.state_dir is not None:
        with gather:
            o.state_dir = _nonempty("--state-dir", args.state_dir)
    with gather:
        o.psk, o.psk_source = _passphrase(args, environ)
        if o.psk_source == "--psk-file":
            o.psk_file = args.psk_file

    if problems is not None and len(problems) > before:
        return o
    for message in _conflicts(o, args):
        with gather:
            raise UsageError(message)
    return o


def _conflicts(o: Options, args) -> list[str]:
    """What is wrong between options, each good on its own, as messages."""
    out = []
    if o.mode == "server":
        if o.auto:
            out.append("--auto: only for a client (the server hands out auto profiles)")
    else:
        if o.server_host is None:
            out.append("--server-host: required for a client")
        if not o.auto and o.local_cidr is None and o.local_cidr6 is None:
            out.append("--local-cidr: required for a manual client (or use --auto)")
        elif not o.auto and o.local_cidr is None and (o.protocol != "v2" or not o.psk):
            # The legacy protocol (a fallback of --protocol auto too)
            # carries IPv4 only: an IPv6-only client has nothing to say there.
            out.append(f"--local-cidr: {o.local_cidr6} alone needs --protocol v2 and a "
                       f"passphrase (the legacy protocol carries IPv4 only; add an IPv4 -l)")
        if args.no_legacy:
            out.append("--no-legacy: only for a server (a client picks with --protocol)")
        if args.server_tun:
            out.append("--server-tun: only for a server")
        if args.max_clients is not None:
            out.append("--max-clients: only for a server")
        if args.state_dir is not None:
            out.append("--state-dir: only for a server")
    if args.no_legacy and o.protocol == "legacy":
        out.append("--no-legacy: contradicts --protocol legacy")
    if o.encrypt and o.psk is None:
        out.append(f"--encrypt: needs a passphrase (--psk, --psk-file or {ENV_PSK})")
    return out

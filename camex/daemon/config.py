"""The server configuration file (the auto-mode database); the value checks
it shares with the command line are camex.daemon.parse's.

Format (docs/LEGACY.md §7): flat ``key=value`` lines in
``[defaults]`` and ``[client <ID>]`` sections; blank lines and lines starting
with ``#`` or ``;`` are ignored. Every error names the file and the line, so an
operator editing /etc/camex/camex.conf on a camera can find the mistake; a
SIGHUP reload that fails keeps the old configuration (the daemon's choice),
which is why nothing here is half-applied: parse_config returns a complete
ServerConfig or raises.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from camex.base import addrpolicy
from camex.legacy.codec import MAX_ROUTES
from camex.base.value import Value
# The value checks the command line shares (and ConfigError) live in
# camex.daemon.parse, so that a client, which reads no file, does not load
# this parser: every module a daemon imports stays resident.
from camex.daemon.parse import (DEFAULT_PATH, ConfigError, parse_client_id,  # noqa: F401
                                parse_gateway, parse_host_cidr, parse_int, parse_ip,
                                parse_ipv4, parse_ipv6, parse_mtu, parse_psk, parse_route)


# ------------------------------------------------------------ data model

# Plain classes rather than dataclasses: `dataclasses` imports `inspect`
# (1.2 MiB of the daemon's resident memory); camex.base.value.Value gives
# the equality and repr a dataclass would. One Profile and one ClientSection
# per [client ID] section: __slots__ keep a large file small.

class Profile(Value):
    """One section's values. `local_cidr`/`gateway_ip` are the IPv4 ones (what
    the legacy protocol carries), `local_cidr6`/`gateway_ip6` the IPv6 ones
    (v2 only); `routes`, `allowed` and `client_cidr` hold both families."""

    __slots__ = ("local_cidr", "gateway_ip", "routes", "mtu", "allowed", "client_cidr",
                 "local_cidr6", "gateway_ip6")

    def __init__(self, local_cidr: IPv4Interface | None = None,
                 gateway_ip: IPv4Address | None = None,
                 routes: list | None = None, mtu: int | None = None,
                 allowed: list | None = None,
                 client_cidr: list | None = None,
                 local_cidr6: IPv6Interface | None = None,
                 gateway_ip6: IPv6Address | None = None):
        self.local_cidr = local_cidr
        self.gateway_ip = gateway_ip
        self.local_cidr6 = local_cidr6
        self.gateway_ip6 = gateway_ip6
        self.routes = [] if routes is None else routes
        self.mtu = mtu
        # Networks behind the client whose addresses it may use as inner
        # sources (v2 identity binding). A C server warns and ignores the key.
        self.allowed = [] if allowed is None else allowed
        # [defaults] only: the tunnel networks clients' addresses come from
        # (camex.base.addrpolicy; derived from gateway_ip/local_cidr if empty).
        self.client_cidr = [] if client_cidr is None else client_cidr


class ClientSection:
    __slots__ = ("id", "profile", "psk", "line")

    def __init__(self, id: str, profile: Profile | None = None,  # noqa: A002 - the key's name
                 psk: bytes | None = None, line: int = 0):
        self.id = id                     # as written in the file
        self.profile = Profile() if profile is None else profile   # this section only
        self.psk = psk
        self.line = line                 # line of the [client ...] header

    def __repr__(self) -> str:
        # Never the passphrase, not even in a traceback or a debug log.
        return (f"ClientSection(id={self.id!r}, profile={self.profile!r}, "
                f"psk={'<set>' if self.psk else None}, line={self.line})")


class ServerConfig(Value):
    __slots__ = ("path", "defaults", "clients", "warnings", "key_lines")

    def __init__(self, path: str = "<string>", defaults: Profile | None = None,
                 clients: dict[str, ClientSection] | None = None,
                 warnings: list[str] | None = None):
        self.path = path
        self.defaults = Profile() if defaults is None else defaults
        self.clients = {} if clients is None else clients   # lowercased id
        self.warnings = [] if warnings is None else warnings
        # Where keys were written, for errors found after the whole file
        # is read: (lowercased id or None for [defaults], key[, value]) -> line.
        self.key_lines: dict = {}

    def client(self, client_id: str) -> ClientSection | None:
        return self.clients.get(client_id.lower())

    def profile_for(self, client_id: str) -> Profile | None:
        """[defaults] overlaid by [client ID]; None if there is no such section.
        Routes: those of [defaults], then the client's own (a route listed in
        both appears once: installing it twice would fail)."""
        section = self.client(client_id)
        if section is None:
            return None
        return merge(self.defaults, section.profile)

    def psk_entries(self) -> list[tuple[str, bytes]]:
        """(lowercased client id, passphrase) of every client section with psk=.
        The global passphrase is not here: it comes from the command line."""
        return [(key, sec.psk) for key, sec in self.clients.items() if sec.psk]


def merge(defaults: Profile, own: Profile) -> Profile:
    routes = list(defaults.routes)
    routes += [r for r in own.routes if r not in routes]
    return Profile(
        local_cidr=own.local_cidr if own.local_cidr is not None else defaults.local_cidr,
        gateway_ip=own.gateway_ip if own.gateway_ip is not None else defaults.gateway_ip,
        routes=routes,
        mtu=own.mtu if own.mtu is not None else defaults.mtu,
        allowed=list(own.allowed),
        local_cidr6=own.local_cidr6 if own.local_cidr6 is not None else defaults.local_cidr6,
        gateway_ip6=own.gateway_ip6 if own.gateway_ip6 is not None else defaults.gateway_ip6,
    )


# ------------------------------------------------------------ parser

_SINGLE_KEYS = ("local_cidr", "gateway_ip", "mtu", "psk")
_FAMILY_KEYS = ("local_cidr", "gateway_ip")   # once per address family
_KNOWN_KEYS = _SINGLE_KEYS + ("route_cidr", "allowed_cidr", "client_cidr")


def load_config(path: str) -> ServerConfig:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ConfigError(path, None, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    # surrogateescape keeps any byte of a psk= value exactly as written.
    return parse_config(data.decode("utf-8", "surrogateescape"), path)


def parse_config(text: str, path: str = "<string>") -> ServerConfig:
    """The file's ServerConfig, or ConfigError listing every problem found.

    After a bad line the parser goes on with the next one. The keys of a
    section whose header is refused (unknown, malformed, a duplicate) are
    still checked, into a section of their own that is then thrown away:
    each of their mistakes is reported, and none of them reports the
    header's mistake again."""
    cfg = ServerConfig(path=path)
    problems: list[ConfigError] = []
    # None: before any section header; otherwise the Profile being filled and
    # its ClientSection (None for [defaults]).
    current: Profile | None = None
    section: ClientSection | None = None
    seen_keys: dict[str, int] = {}
    defaults_line = 0

    if text.startswith("\ufeff"):       # an editor's byte-order mark
        text = text[1:]
    # split("\n") rather than splitlines(): line numbers must match what an
    # editor shows, and splitlines() also breaks at \f, \x1c, U+2028 ...
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        try:
            if line.startswith("["):
                seen_keys = {}
                # Until the header is known good, its keys go to a section
                # nobody will see (a client one, so that psk= is checked).
                section = ClientSection(id="", line=lineno)
                current = section.profile
                current, section = _header(cfg, line, lineno, defaults_line, current, section)
                if section is None:
                    defaults_line = lineno
                continue
            _key_line(cfg, line, lineno, current, section, seen_keys)
        except _LineError as e:
            problems.append(ConfigError(path, lineno, str(e)))

    problems += _check_merged_routes(cfg)
    problems += [ConfigError(path, line, message)
                 for line, message in addrpolicy.config_errors(cfg, ())]
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        first = problems[0]
        raise ConfigError(path, first.line, first.message, problems)
    return cfg


class _LineError(Exception):
    """What is wrong with one line (parse_config adds the file and line)."""


def _header(cfg: ServerConfig, line: str, lineno: int, defaults_line: int,
            current: Profile, section: ClientSection):
    """A section header: the (profile, section) its keys fill from now on
    (section None for [defaults]); _LineError if it is refused, after which
    the caller's throw-away section collects its keys."""
    if not line.endswith("]"):
        raise _LineError(f"section header {line!r} has no closing ']'")
    name = line[1:-1].strip()
    parts = name.split(None, 1)
    word = parts[0] if parts else ""
    rest = parts[1] if len(parts) > 1 else ""
    if name.lower() == "defaults":
        if defaults_line:
            raise _LineError(f"duplicate section [defaults] (first at line {defaults_line})")
        return cfg.defaults, None
    if word.lower() != "client":
        raise _LineError(f"unknown section [{name}] (expected [defaults] or [client ID])")
    try:
        cid = parse_client_id(rest)
    except ValueError as e:
        raise _LineError(f"section [{name}]: {e}") from None
    old = cfg.clients.get(cid.lower())
    if old is not None:
        raise _LineError(f"duplicate section [client {cid}] "
                         f"(first at line {old.line}, IDs ignore case)")
    section = ClientSection(id=cid, line=lineno)
    cfg.clients[cid.lower()] = section
    return section.profile, section


def _key_line(cfg: ServerConfig, line: str, lineno: int, current: Profile | None,
              section: ClientSection | None, seen_keys: dict[str, int]) -> None:
    key, sep, value = line.partition("=")
    key, value = key.strip().lower(), value.strip()
    if not sep:
        raise _LineError(f"expected key=value, got {line!r}")
    if current is None:
        raise _LineError(f"key {key!r} outside a section ([defaults] or [client ID] first)")
    if not key:
        raise _LineError("missing key before '='")
    if key not in _KNOWN_KEYS:
        cfg.warnings.append(f"{cfg.path}:{lineno}: unknown key {key!r} ignored")
        return
    if not value:
        raise _LineError(f"{key}: empty value")
    # local_cidr= and gateway_ip= once per family: an IPv4 and an IPv6 one.
    slot = key + "6" if key in _FAMILY_KEYS and ":" in value else key
    if key in _SINGLE_KEYS:
        if slot in seen_keys:
            family = " (IPv6)" if slot != key else " (IPv4)" if key in _FAMILY_KEYS else ""
            raise _LineError(f"{key}: given twice in this section{family} (first at line "
                             f"{seen_keys[slot]})")
        seen_keys[slot] = lineno
    try:
        _apply(current, section, key, value)
    except ValueError as e:
        raise _LineError(f"{key}: {e}") from None
    owner = section.id.lower() if section is not None else None
    cfg.key_lines.setdefault((owner, slot), lineno)
    if key == "allowed_cidr":
        cfg.key_lines[(owner, key, str(current.allowed[-1]))] = lineno


def check_policy(cfg: ServerConfig, server_interfaces=()) -> None:
    """Raise ConfigError for the first client section that breaks the
    address policy (camex.base.addrpolicy), e.g. one that holds the gateway.
    `server_interfaces`: the server TUN's own address (-l), if any."""
    errors = addrpolicy.config_errors(cfg, server_interfaces)
    if errors:
        line, message = min(errors)
        raise ConfigError(cfg.path, line, message)


def _add_network(nets: list, value: str) -> None:
    """One more network of a repeatable key; the same one twice is an error."""
    net = parse_route(value)
    if net in nets:
        raise ValueError(f"{net} is listed twice in this section")
    nets.append(net)


def _apply(prof: Profile, section: ClientSection | None, key: str, value: str) -> None:
    if key == "local_cidr":
        iface = parse_host_cidr(value)
        if iface.version == 6:
            prof.local_cidr6 = iface
        else:
            prof.local_cidr = iface
    elif key == "gateway_ip":
        gw = parse_gateway(value)
        if gw.version == 6:
            prof.gateway_ip6 = gw
        else:
            prof.gateway_ip = gw
    elif key == "mtu":
        prof.mtu = parse_mtu(value)
    elif key == "psk":
        if section is None:
            raise ValueError("only allowed in [client ID] sections (the global "
                             "passphrase is given on the command line)")
        section.psk = parse_psk(value.encode("utf-8", "surrogateescape"))
    elif key == "allowed_cidr":
        if section is None:
            raise ValueError("only allowed in [client ID] sections (networks "
                             "behind that client)")
        _add_network(prof.allowed, value)
    elif key == "client_cidr":
        if section is not None:
            raise ValueError("only allowed in [defaults] (the tunnel network "
                             "clients' addresses come from)")
        _add_network(prof.client_cidr, value)
    elif key == "route_cidr":
        route = parse_route(value)
        if route in prof.routes:
            raise ValueError(f"{route} is listed twice in this section")
        if sum(r.version == route.version for r in prof.routes) >= MAX_ROUTES:
            raise ValueError(f"more than {MAX_ROUTES} routes (IPv{route.version}) in this "
                             f"section")
        prof.routes.append(route)


def _check_merged_routes(cfg: ServerConfig) -> list[ConfigError]:
    # A CONFIG message carries at most 16 routes; a merged profile with more
    # would be silently cut on the wire, so refuse the file instead.
    problems = []
    # (v2 carries at most 16 of each family.)
    for sec in cfg.clients.values():
        merged = merge(cfg.defaults, sec.profile)
        for version in (4, 6):
            n = sum(r.version == version for r in merged.routes)
            if n > MAX_ROUTES:
                problems.append(ConfigError(
                    cfg.path, sec.line, f"[client {sec.id}]: {n} routes (IPv{version}) with "
                                        f"those of [defaults], at most {MAX_ROUTES}"))
    return problems

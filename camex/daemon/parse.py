"""The value checks the command line (camex.daemon.options) and the server's
configuration file (camex.daemon.config) share, and the error a configuration
file raises. Apart from the file's parser so that a client, which reads no
configuration file, does not load it.
"""

from __future__ import annotations

import re
from ipaddress import (IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface,
                       IPv6Network)

from camex.legacy.codec import (MAX_CLIENT_ID_LEN, MAX_MTU, MIN_MTU, PASSPHRASE_MAX,
                                PASSPHRASE_MIN)

DEFAULT_PATH = "/etc/camex/camex.conf"

# ------------------------------------------------------------ value checks
# Shared by camex.daemon.options and camex.daemon.config. Each raises ValueError with a message that does
# not repeat where the value came from; the caller prefixes the option name or
# "FILE:LINE: key". Messages quote user text with repr() so that they stay on
# one line whatever the input holds.

_DECIMAL = re.compile(r"[0-9]+")


def _quote(text: str) -> str:
    return repr(text)


def parse_int(text: str, lo: int, hi: int, what: str) -> int:
    # int() would accept "+5", " 5", "5_000" and non-ASCII digits; a config
    # value or an option should be plain decimal.
    if not (text.isascii() and _DECIMAL.fullmatch(text)):
        if text.isascii() and text[:1] == "-" and _DECIMAL.fullmatch(text[1:]):
            # A negative number is a number: say what is wrong with it.
            raise ValueError(f"{text} is out of range {lo}..{hi}")
        raise ValueError(f"{_quote(text)} is not a number ({what} {lo}..{hi})")
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"{value} is out of range {lo}..{hi}")
    return value


def parse_mtu(text: str) -> int:
    return parse_int(text, MIN_MTU, MAX_MTU, "MTU")


def parse_ipv4(text: str) -> IPv4Address:
    if ":" in text:
        raise ValueError(f"{_quote(text)} is IPv6; camex runs over IPv4 only")
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"{_quote(text)} is not an IPv4 address") from None


def _split_cidr(text: str) -> tuple[str, int]:
    addr, sep, prefix = text.partition("/")
    if not sep:
        raise ValueError(f"{_quote(text)} has no prefix length (write it as "
                         f"{'x:y::z/nn' if ':' in addr else 'a.b.c.d/nn'})")
    if ":" in addr:
        parse_ip(addr)
        if not (prefix.isascii() and _DECIMAL.fullmatch(prefix)) or int(prefix) > 128:
            raise ValueError(f"{_quote(text)} has a bad prefix length (0..128 for IPv6)")
        return addr, int(prefix)
    if not (prefix.isascii() and _DECIMAL.fullmatch(prefix)) or int(prefix) > 32:
        raise ValueError(f"{_quote(text)} has a bad prefix length (0..32)")
    parse_ipv4(addr)
    return addr, int(prefix)


def parse_ipv6(text: str) -> IPv6Address:
    """An IPv6 address inside the tunnel: no scope id (a tunnel address is
    global to the tunnel), no IPv4-mapped form (say the IPv4 address)."""
    if "%" in text:
        raise ValueError(f"{_quote(text)} has a scope id ({text[text.index('%'):]!r}); "
                         f"tunnel addresses and routes take none")
    try:
        a = IPv6Address(text)
    except ValueError:
        raise ValueError(f"{_quote(text)} is not an IPv6 address") from None
    if a.ipv4_mapped is not None:
        raise ValueError(f"{_quote(text)} is an IPv4-mapped IPv6 address; write the "
                         f"IPv4 address {a.ipv4_mapped} instead")
    return a


def parse_ip(text: str) -> IPv4Address | IPv6Address:
    """An address of either family (IPv6 when it holds a ':')."""
    return parse_ipv6(text) if ":" in text else parse_ipv4(text)


def parse_gateway(text: str) -> IPv4Address | IPv6Address:
    """A tunnel gateway of either family. An IPv6 link-local one is refused:
    every interface has its own fe80::/64, so it names no host of the tunnel."""
    a = parse_ip(text)
    if a.version == 6 and (a.is_link_local or a.is_multicast or a.is_unspecified
                           or a.is_loopback):
        kind = "link-local" if a.is_link_local else "not a unicast host address"
        raise ValueError(f"{_quote(text)} is {kind}; a tunnel gateway needs a global or "
                         f"unique-local IPv6 address (as the clients' own)")
    return a


def parse_host_cidr(text: str) -> IPv4Interface | IPv6Interface:
    """A tunnel address with its prefix, e.g. 10.0.0.2/24 (not 10.0.0.0/24),
    or fd00:c::2/64."""
    addr, prefix = _split_cidr(text)
    if ":" in addr:
        iface6 = IPv6Interface(f"{addr}/{prefix}")
        ip6, net6 = iface6.ip, iface6.network
        if (ip6.is_unspecified or ip6.is_multicast or ip6.is_loopback or ip6.is_link_local
                or int(ip6) >> 32 == 0):
            raise ValueError(f"{_quote(text)} is not a usable tunnel address (unspecified, "
                             f"loopback, multicast, link-local or IPv4-compatible)")
        if prefix == 0:
            raise ValueError(f"{_quote(text)}: prefix length 0 is not a tunnel subnet")
        if prefix < 127 and ip6 == net6.network_address:
            raise ValueError(f"{_quote(text)} is the network address; give the host's "
                             f"own address, e.g. {net6.network_address + 1}/{prefix}")
        return iface6
    iface = IPv4Interface(f"{addr}/{prefix}")
    ip, net = iface.ip, iface.network
    if ip.is_unspecified or ip.is_multicast or ip == IPv4Address("255.255.255.255"):
        raise ValueError(f"{_quote(text)} is not a usable host address")
    if prefix == 0:
        raise ValueError(f"{_quote(text)}: prefix length 0 is not a tunnel subnet")
    if prefix < 31 and ip == net.network_address:
        raise ValueError(f"{_quote(text)} is the network address; give the host's "
                         f"own address, e.g. {net.network_address + 1}/{prefix}")
    if prefix < 31 and ip == net.broadcast_address:
        raise ValueError(f"{_quote(text)} is the broadcast address of {net}")
    return iface


def parse_route(text: str) -> IPv4Network | IPv6Network:
    """A destination network routed into the tunnel, e.g. 10.251.0.0/24 or
    fd00:251::/48."""
    addr, prefix = _split_cidr(text)
    net_type = IPv6Network if ":" in addr else IPv4Network
    try:
        return net_type(f"{addr}/{prefix}")
    except ValueError:
        # Host bits set: the kernel would refuse the route, so say so now.
        net = net_type(f"{addr}/{prefix}", strict=False)
        raise ValueError(f"{_quote(text)} has host bits set (did you mean {net}?)") from None


def parse_psk(raw: bytes) -> bytes:
    """A legacy passphrase: 1..63 raw bytes. Never echoes the value."""
    if not PASSPHRASE_MIN <= len(raw) <= PASSPHRASE_MAX:
        raise ValueError(f"passphrase must be {PASSPHRASE_MIN}..{PASSPHRASE_MAX} "
                         f"bytes, got {len(raw)}")
    return raw


# A client ID as a server accepts it from a [client ID] header: an unmodified
# C client may send any token, so only what cannot travel in a control
# message is refused (space and '=' break the KEY=VALUE line).
_ID_CHARS = re.compile(r"[!-~]+")


def parse_client_id(text: str) -> str:
    if not text:
        raise ValueError("client ID is empty")
    if len(text) > MAX_CLIENT_ID_LEN:
        raise ValueError(f"client ID {_quote(text)} is longer than "
                         f"{MAX_CLIENT_ID_LEN} characters")
    if not (text.isascii() and _ID_CHARS.fullmatch(text)) or "=" in text:
        raise ValueError(f"client ID {_quote(text)} may hold only printable ASCII "
                         f"without spaces or '='")
    return text


class ConfigError(Exception):
    """A configuration file that cannot be used. str() is "FILE:LINE: message"
    (or "FILE: message" when the whole file is at fault, e.g. missing): the
    first problem, in line order. `problems` lists every problem the parser
    found (this one first), each a ConfigError: it goes on after a bad line,
    so that `camex check-config` can name them all at once."""

    def __init__(self, path: str, line: int | None, message: str,
                 problems: list[ConfigError] | None = None):
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.problems = [self] if problems is None else problems

"""Outer endpoints (the UDP peer's address and port): one canonical form,
one text form, and the parsing of an outer host given on the command line.

A dual-stack (AF_INET6, IPV6_V6ONLY=0) socket reports an IPv4 peer as
('::ffff:a.b.c.d', port, flowinfo, scope_id). Everything past the socket
(the cores, the state file, the address policy, the per-endpoint tables,
`camex status`) sees one canonical endpoint per peer instead: (host, port)
with a plain dotted quad for an IPv4 peer, the compressed IPv6 text for an
IPv6 one, and no flowinfo (nor scope, but for a link-local peer). `canonical()` makes it, `sockaddr_v6()`
turns it back into what an AF_INET6 socket's sendto() takes (an AF_INET
socket takes the canonical form as it is). No I/O here.
"""

from __future__ import annotations

import ipaddress

MAPPED = "::ffff:"


def canonical(addr) -> tuple:
    """The canonical (host, port) of a socket address (2- or 4-tuple). A
    link-local IPv6 peer keeps its scope as 'fe80::2%3' (sendto() takes
    it back; without it the reply could not leave)."""
    host = addr[0]
    if host.startswith(MAPPED) and "." in host:
        return host[7:], addr[1]
    if len(addr) == 4 and addr[3]:
        return f"{host}%{addr[3]}", addr[1]
    return host, addr[1]


def sockaddr_v6(ep) -> tuple:
    """The AF_INET6 socket address of a canonical endpoint."""
    host = ep[0]
    if ":" in host:
        return ep
    return MAPPED + host, ep[1]


def fmt(ep) -> str:
    """'192.0.2.1:7000' or '[2001:db8::2]:7000' (any socket address form)."""
    if ep is None:
        return "?"
    host, port = canonical(ep)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fmt_host(host: str, port: int) -> str:
    """As fmt(), for a host text (a name, or an address) and a port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_ip(text: str):
    """An outer IPv4 or IPv6 address literal (brackets allowed for IPv6),
    as an ipaddress object. ValueError, in words, for what camex cannot
    use as an outer address: a scope id (link-local peers need an
    interface camex does not pick), a v4-mapped address (write the IPv4
    address), anything in brackets that is not an IPv6 address."""
    t = text
    if t.startswith("[") or t.endswith("]"):
        if not (t.startswith("[") and t.endswith("]")):
            raise ValueError(f"{text!r}: unbalanced brackets")
        t = t[1:-1]
        if ":" not in t:
            raise ValueError(f"{text!r}: only an IPv6 address goes in brackets")
    if "%" in t:
        raise ValueError(f"{text!r}: an IPv6 scope id (%...) is not supported; "
                         "use a global or unique-local address")
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        raise ValueError(f"{text!r} is a v4-mapped address; write {ip.ipv4_mapped}")
    if ip.version == 6 and ip.is_link_local:
        raise ValueError(f"{text!r} is link-local, which needs a scope id; use a global "
                         "or unique-local address")
    return ip


# IP and UDP headers in front of every datagram: 20 + 8 over IPv4, 40 + 8
# over IPv6. Default tunnel MTUs are what fits a 1500-byte path after them
# and the protocol's overhead.
OUTER_IP_UDP = {False: 28, True: 48}


def outer_ip_udp(ipv6: bool) -> int:
    return OUTER_IP_UDP[bool(ipv6)]

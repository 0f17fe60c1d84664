"""One-line summaries of the inner packets camex-dissect decrypts.

IPv4 packets get Scapy's own summary (`IP / TCP 10.0.0.2:4 > 10.0.0.3:5 S /
Raw`). IPv6 ones get the same shape written here, because Scapy's IPv6
summaries leave the addresses out of ICMPv6 lines and print TCP endpoints
unbracketed (`2001:db8::2:4`, where the port cannot be told from the
address); e.g. `IPv6 / ICMPv6 2001:db8::2 > 2001:db8::3 echo-request id=1
seq=2`, `IPv6 / TCP [2001:db8::2]:40000 > [2001:db8::3]:5201 PA / Raw`.
Extension headers are named on the way (`IPv6 / hop-by-hop / ICMPv6 ...`).
"""

from __future__ import annotations

import ipaddress

ICMPV6_TYPES = {
    1: "dest-unreach", 2: "packet-too-big", 3: "time-exceeded", 4: "param-problem",
    128: "echo-request", 129: "echo-reply", 130: "mld-query", 131: "mld-report",
    132: "mld-done", 133: "router-solicitation", 134: "router-advertisement",
    135: "neighbor-solicitation", 136: "neighbor-advertisement", 137: "redirect",
    143: "mldv2-report",
}
EXT_NAMES = {0: "hop-by-hop", 43: "routing", 60: "dest-options"}
PROTO_NAMES = {1: "icmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 50: "esp",
               51: "ah", 58: "icmpv6", 59: "no-next-header", 132: "sctp"}
TCP_FLAGS = "FSRPAUEC"


def summary(data) -> str:
    """The line shown for one inner packet."""
    from scapy.packet import Raw

    from camex.proto.legacy import inner_class
    if not data:
        return "(empty)"
    cls = inner_class(data)
    if cls.__name__ == "IPv6":
        return ipv6_summary(bytes(data))
    try:
        return cls(data).summary()
    except Exception:  # Scapy should not raise, but a line must still print
        return Raw(data).summary()


def _tcp_flags(b: int) -> str:
    return "".join(f for i, f in enumerate(TCP_FLAGS) if b >> i & 1)


def ipv6_summary(p: bytes) -> str:
    """Summary of an IPv6 packet (at least 40 bytes): addresses, extension
    headers, next protocol, and ports / ICMPv6 type as for IPv4."""
    src = str(ipaddress.IPv6Address(p[8:24]))
    dst = str(ipaddress.IPv6Address(p[24:40]))
    parts = ["IPv6"]
    nh, pos = p[6], 40
    while nh in EXT_NAMES or nh == 44:
        if pos + 8 > len(p):
            return " / ".join(parts) + f" {src} > {dst} (truncated extension header)"
        if nh == 44:
            offm = int.from_bytes(p[pos + 2:pos + 4], "big")
            parts.append(f"fragment off={offm & 0xFFF8}{' M' if offm & 1 else ''}")
            if offm & 0xFFF8:  # not the first: no upper-layer header here
                return " / ".join(parts) + (f" {src} > {dst} "
                                            f"{PROTO_NAMES.get(p[pos], 'proto %d' % p[pos])}")
            nh, pos = p[pos], pos + 8
        else:
            parts.append(EXT_NAMES[nh])
            nh, pos = p[pos], pos + (p[pos + 1] + 1) * 8
    rest = p[pos:]
    if nh == 58 and len(rest) >= 4:
        t, code = rest[0], rest[1]
        line = f"ICMPv6 {src} > {dst} {ICMPV6_TYPES.get(t, 'type %d' % t)}"
        if code:
            line += f" code={code}"
        if t in (128, 129) and len(rest) >= 8:
            line += f" id={int.from_bytes(rest[4:6], 'big')} seq={int.from_bytes(rest[6:8], 'big')}"
        elif t == 2 and len(rest) >= 8:
            line += f" mtu={int.from_bytes(rest[4:8], 'big')}"
        elif t in (135, 136) and len(rest) >= 24:
            line += f" target={ipaddress.IPv6Address(rest[8:24])}"
        parts.append(line)
    elif nh == 6 and len(rest) >= 20:
        sport, dport = int.from_bytes(rest[0:2], "big"), int.from_bytes(rest[2:4], "big")
        parts.append(f"TCP [{src}]:{sport} > [{dst}]:{dport} {_tcp_flags(rest[13])}")
        if len(rest) > (rest[12] >> 4) * 4:
            parts.append("Raw")
    elif nh == 17 and len(rest) >= 8:
        sport, dport = int.from_bytes(rest[0:2], "big"), int.from_bytes(rest[2:4], "big")
        parts.append(f"UDP [{src}]:{sport} > [{dst}]:{dport}")
        if len(rest) > 8:
            parts.append("Raw")
    else:
        name = PROTO_NAMES.get(nh, "proto %d" % nh)
        return " / ".join(parts) + f" {src} > {dst} {name}" + (" (truncated)" if nh in (6, 17, 58)
                                                              else "")
    return " / ".join(parts)

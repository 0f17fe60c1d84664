"""What a client core asks of its interface, shared by the legacy and v2
cores and the daemons: the interface configuration (IfConfig), a reconnect
request, the inner MTU that fits a 1500-byte path, and which TUN packets may
enter the tunnel.

Apart from camex.legacy.client so that a server (which names IfConfig and
the MTU) and a v2-only client do not load the legacy client core: every
module a daemon imports stays resident for its lifetime.
"""

from __future__ import annotations

import ipaddress

from ..base.endpoint import outer_ip_udp
from ..base.value import Value
from .codec import OVERHEAD_ENC

PATH_MTU = 1500


def default_mtu(encrypt: bool, ipv6: bool = False) -> int:
    """Inner MTU so that a full-size inner packet fits a 1500-byte path
    (1429 encrypted, 1472 plaintext over IPv4; 20 less over IPv6)."""
    return PATH_MTU - outer_ip_udp(ipv6) - (OVERHEAD_ENC if encrypt else 0)


def admit(core, packet) -> bool:
    """May a packet read from the TUN enter the tunnel? The legacy core
    carries IPv4 only, the v2 core IPv6 too once its interface has an IPv6
    address, and an auto client nothing before it has its configuration;
    a refused packet is counted in `core.drops`."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        if packet[:1] and packet[0] >> 4 == 6 and len(packet) >= 40 \
                and getattr(core.config, "address6", None) is not None:
            return not (core.auto and core.config is None)
        core.drops["not-ipv4"] += 1
        return False
    if core.auto and core.config is None:
        core.drops["not-configured"] += 1
        return False
    return True


class IfConfig(Value):
    """What the TUN interface should look like. Compared by value: a core
    reconfigures the interface only when the configuration changed."""

    __slots__ = ("address", "mtu", "gateway", "routes", "address6", "gateway6")

    def __init__(self, address: ipaddress.IPv4Interface | None, mtu: int,
                 gateway: ipaddress.IPv4Address | None = None, routes: list | None = None,
                 address6: ipaddress.IPv6Interface | None = None,
                 gateway6: ipaddress.IPv6Address | None = None):
        self.address = address      # IPv4; None on an IPv6-only v2 client
        self.mtu = mtu
        self.gateway = gateway
        self.routes = [] if routes is None else routes   # both families
        self.address6 = address6    # v2 only: IPv6 inside the tunnel
        self.gateway6 = gateway6


class Reconnect:
    """Ask the loop for a new socket (new source port) to the server."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

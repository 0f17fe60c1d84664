"""Interface address, MTU, link state and routes: the daemon's side.

The netlink work runs through pyroute2 in a short-lived forked helper
(camex.io.netlink_ops in a camex.base.child.Helper): importing pyroute2 costs
~20 MiB resident, more than the rest of the daemon, and a process's peak
never comes down. The daemon process itself never imports pyroute2.

The helper is forked when a LinkConfig is made (so that pyroute2 imports
while the client connects), answers the first `apply`, and is let go right
after; later changes (auto mode, shutdown) fork a fresh one for the moment
they need it.

The client owns what it adds: `apply` brings the interface to an IfConfig
and `clear` removes the routes and address it added, so that an exit
leaves no trace even on a persistent device such as camex.ko's.
"""

from __future__ import annotations

import socket

from ..base.child import Helper, HelperError
from ..base.log import LOG

TX_QUEUE_LEN = 2000
# The first request waits for pyroute2's import: 0.1-0.5 s on a PC, seconds
# on a small camera SoC.
HELPER_TIMEOUT = 30.0
# A helper forked ahead of its first request waits this long for it (the
# server may be slow to answer) before it exits; a later request forks anew.
HELPER_IDLE = 5.0


class NetlinkConfigError(RuntimeError):
    pass


def _setup():
    # In the helper child only.
    from . import netlink_ops
    return netlink_ops.handle


_helper = Helper("netlink", _setup, timeout=HELPER_TIMEOUT, idle=HELPER_IDLE)


def _call(*request):
    try:
        return _helper.call(*request)
    except HelperError as e:
        raise NetlinkConfigError(str(e)) from None


def start_helper() -> None:
    """Fork the helper ahead of the first request (best effort: LinkConfig
    reports a helper that cannot start)."""
    try:
        _helper.start()
    except OSError:
        pass


class LinkConfig:
    def __init__(self, ifname: str):
        self.ifname = ifname
        try:
            self.index = socket.if_nametoindex(ifname)
        except OSError:
            raise NetlinkConfigError(f"interface {ifname} not found") from None
        self.address = None
        self.address6 = None
        self.routes: list = []
        # Largest TSO super-packet the kernel may hand the TUN (None: the
        # kernel's 64 KiB); a v2 daemon sets it so that a BULK frame is one
        # UDP send (camex.v2.wire.bulk_one_send_packet).
        self.gso_max_size = None
        try:
            _helper.start()  # pyroute2 imports there while we go on
        except OSError as e:
            raise NetlinkConfigError(f"cannot start the netlink helper: {e.strerror}") from None

    def apply(self, cfg) -> None:
        """Make the interface match `cfg` (an IfConfig), changing only what differs."""
        wanted = list(dict.fromkeys(cfg.routes))
        address6 = getattr(cfg, "address6", None)
        # A gateway inside the local subnet is reachable on the link; any
        # other gateway would make the kernel refuse the route.
        gateway = cfg.gateway if cfg.gateway is not None and cfg.address is not None and \
            cfg.gateway in cfg.address.network else None
        gateway6 = getattr(cfg, "gateway6", None)
        if gateway6 is not None and (address6 is None or gateway6 not in address6.network):
            gateway6 = None
        if address6 is None:
            wanted = [n for n in wanted if n.version == 4]   # no IPv6 on the link
        else:
            enable_ipv6(self.ifname)
        by_name = {str(n): n for n in self.routes + wanted}
        _s = lambda x: None if x is None else str(x)   # noqa: E731
        try:
            state = _call("apply", self.index, self.ifname, cfg.mtu, TX_QUEUE_LEN,
                          _s(cfg.address), _s(self.address),
                          [str(n) for n in self.routes], [str(n) for n in wanted],
                          _s(gateway), self.gso_max_size,
                          _s(address6), _s(self.address6), _s(gateway6))
        finally:
            _helper.release()
        if state["address"] is None:
            self.address = None
        elif state["address"] == str(cfg.address):
            self.address = cfg.address
        if state.get("address6") is None:
            self.address6 = None
        elif state["address6"] == str(address6):
            self.address6 = address6
        self.routes = [by_name[n] for n in state["routes"]]
        for warning in state["warnings"]:
            LOG.warning("%s", warning)
        if state["error"]:
            raise NetlinkConfigError(state["error"])

    def clear(self) -> None:
        """Remove the routes and the address we added and take the link down."""
        try:
            _call("clear", self.index,
                  None if self.address is None else str(self.address),
                  [str(n) for n in self.routes],
                  None if self.address6 is None else str(self.address6))
        except NetlinkConfigError as e:
            LOG.error("could not remove the address and routes of %s: %s", self.ifname, e)
        finally:
            _helper.release()
        self.routes = []
        self.address = self.address6 = None

    def close(self) -> None:
        _helper.release()


def default_route_mac() -> str | None:
    """The MAC of the default-route interface as 12 upper-case hex digits.
    The helper stays for the link set-up that follows."""
    return _call("mac")


def enable_ipv6(ifname: str) -> None:
    """IPv6 on the TUN for a v2 client given an IPv6 tunnel address, and
    nothing the kernel would add by itself: no link-local address
    (addr_gen_mode 1), so no router solicitations into the tunnel (the
    server would drop them as spoofed), and no router advertisements taken.
    Best effort: absent without IPv6."""
    base = f"/proc/sys/net/ipv6/conf/{ifname}/"
    for name, value in (("addr_gen_mode", "1"), ("accept_ra", "0"),
                        ("router_solicitations", "0"), ("disable_ipv6", "0")):
        try:
            with open(base + name, "w") as f:
                f.write(value)
        except OSError:
            pass


def disable_ipv6(ifname: str) -> None:
    """Keep the kernel from sending IPv6 (router solicitations) into a
    tunnel that carries IPv4 only. Best effort: absent without IPv6."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass

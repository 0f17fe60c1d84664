"""Interface address, MTU, link state and routes, through pyroute2.

The client owns what it adds: `apply` brings the interface to an IfConfig
and `clear` removes the routes and address it added, so that an exit
leaves no trace even on a persistent device such as camex.ko's.
"""

from __future__ import annotations

import errno
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..log import LOG


TX_QUEUE_LEN = 2000


class NetlinkConfigError(RuntimeError):
    pass


class LinkConfig:
    def __init__(self, ifname: str):
        self.ifname = ifname
        self.ipr = IPRoute()
        idx = self.ipr.link_lookup(ifname=ifname)
        if not idx:
            self.ipr.close()
            raise NetlinkConfigError(f"interface {ifname} not found")
        self.index = idx[0]
        self.address = None
        self.routes: list = []

    def apply(self, cfg) -> None:
        """Make the interface match `cfg` (an IfConfig), changing only what differs."""
        try:
            # A deeper queue than tun's default 500: bursts of GSO-sized
            # receives otherwise overflow it and TCP sees losses.
            self.ipr.link("set", index=self.index, mtu=cfg.mtu, txqlen=TX_QUEUE_LEN)
            if cfg.address != self.address:
                if self.address is not None:
                    self._del_addr(self.address)
                self._flush_foreign_addresses()
                self.ipr.addr("add", index=self.index, address=str(cfg.address.ip),
                              prefixlen=cfg.address.network.prefixlen)
                self.address = cfg.address
            self.ipr.link("set", index=self.index, state="up")
            wanted = list(dict.fromkeys(cfg.routes))
            for net in [r for r in self.routes if r not in wanted]:
                self._del_route(net)
            for net in wanted:
                if net not in self.routes:
                    self._add_route(net, cfg)
        except NetlinkError as e:
            raise NetlinkConfigError(f"configuring {self.ifname}: {e}") from None

    def _flush_foreign_addresses(self) -> None:
        # A persistent device (camex.ko) may keep an address from a previous run.
        for msg in self.ipr.get_addr(family=socket.AF_INET, index=self.index):
            addr = msg.get_attr("IFA_ADDRESS")
            self.ipr.addr("del", index=self.index, address=addr, prefixlen=msg["prefixlen"])

    def _add_route(self, net, cfg) -> None:
        kw = {"dst": str(net), "oif": self.index}
        # A gateway inside the local subnet is reachable on the link; any
        # other gateway would make the kernel refuse the route.
        if cfg.gateway is not None and cfg.gateway in cfg.address.network:
            kw["gateway"] = str(cfg.gateway)
        try:
            self.ipr.route("add", **kw)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
            LOG.warning("route %s already exists; leaving it as it is", net)
            return
        self.routes.append(net)

    def _del_route(self, net) -> None:
        try:
            self.ipr.route("del", dst=str(net), oif=self.index)
        except NetlinkError:
            pass
        self.routes.remove(net)

    def _del_addr(self, iface) -> None:
        try:
            self.ipr.addr("del", index=self.index, address=str(iface.ip),
                          prefixlen=iface.network.prefixlen)
        except NetlinkError:
            pass

    def clear(self) -> None:
        """Remove the routes and the address we added and take the link down."""
        for net in list(self.routes):
            self._del_route(net)
        if self.address is not None:
            self._del_addr(self.address)
            self.address = None
        try:
            self.ipr.link("set", index=self.index, state="down")
        except NetlinkError:
            pass  # the interface went away with its file descriptor

    def close(self) -> None:
        self.ipr.close()


def default_route_mac() -> str | None:
    """The MAC of the default-route interface as 12 upper-case hex digits."""
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            oif = route.get_attr("RTA_OIF")
            if oif is None:
                continue
            links = ipr.get_links(oif)
            mac = links[0].get_attr("IFLA_ADDRESS") if links else None
            if mac and mac != "00:00:00:00:00:00":
                return mac.replace(":", "").upper()
    return None



def disable_ipv6(ifname: str) -> None:
    """Keep the kernel from sending IPv6 (router solicitations) into a
    tunnel that carries IPv4 only. Best effort: absent without IPv6."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass

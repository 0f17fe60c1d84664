"""The netlink work itself, through pyroute2: runs only in the helper child
(camex.io.netlink forks it; see camex.base.child), never in the daemon.

Importing pyroute2 costs ~20 MiB resident and 0.1-0.5 s, which is why it
is imported here only. Arguments and results are plain strings, numbers,
lists and dicts, as they cross a pipe: addresses as "A.B.C.D/NN", routes
as "A.B.C.D/NN", gateway as "A.B.C.D" or None.
"""

from __future__ import annotations

import errno
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

_ipr = None
IFA_F_NODAD = 0x02   # linux/if_addr.h


def _route() -> IPRoute:
    global _ipr
    if _ipr is None:
        _ipr = IPRoute()
    return _ipr


def handle(op: str, *args):
    """One request of the parent: "apply", "clear" or "mac"."""
    return OPS[op](*args)


def apply(index: int, ifname: str, mtu: int, txqlen: int, address: str | None,
          owned_address: str | None, owned_routes: list, wanted: list,
          gateway: str | None, gso_max_size: int | None = None,
          address6: str | None = None, owned_address6: str | None = None,
          gateway6: str | None = None) -> dict:
    """Bring interface `index` to `address` (IPv4) and `address6` (IPv6;
    either may be None), `mtu`, up, and exactly the routes in `wanted`
    (both families) among those we own; change only what differs.

    Returns what we own afterwards (address, address6, routes), warnings
    for the log, and "error" (None when all went well): on an error
    half-way the state says how far it got, so that a later clear removes
    what was added.
    """
    ipr = _route()
    state = {"address": owned_address, "address6": owned_address6,
             "routes": list(owned_routes), "warnings": [], "error": None}
    try:
        # A deeper queue than tun's default 500: bursts of GSO-sized
        # receives otherwise overflow it and TCP sees losses.
        ipr.link("set", index=index, mtu=mtu, txqlen=txqlen)
        if gso_max_size:
            try:
                ipr.link("set", index=index, gso_max_size=gso_max_size)
            except NetlinkError as e:
                state["warnings"].append(f"{ifname}: TSO size stays as it is ({e})")
        if address != owned_address:
            if owned_address is not None:
                _del_addr(ipr, index, owned_address)
                state["address"] = None
            # A persistent device (camex.ko) may keep an address from a previous run.
            for msg in ipr.get_addr(family=socket.AF_INET, index=index):
                ipr.addr("del", index=index, address=msg.get_attr("IFA_ADDRESS"),
                         prefixlen=msg["prefixlen"])
            if address is not None:
                ip, prefix = address.split("/")
                ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
                state["address"] = address
        if address6 != owned_address6:
            if owned_address6 is not None:
                _del_addr(ipr, index, owned_address6)
                state["address6"] = None
            if address6 is not None:
                ip, prefix = address6.split("/")
                # No duplicate address detection: the tunnel is point to
                # point and the server has already granted the address.
                ipr.addr("add", index=index, address=ip, prefixlen=int(prefix),
                         flags=IFA_F_NODAD)
                state["address6"] = address6
        ipr.link("set", index=index, state="up")
        for net in [r for r in state["routes"] if r not in wanted]:
            _del_route(ipr, index, net)
            state["routes"].remove(net)
        for net in wanted:
            if net not in state["routes"]:
                if _add_route(ipr, index, net, gateway6 if ":" in net else gateway):
                    state["routes"].append(net)
                else:
                    state["warnings"].append(f"route {net} already exists; leaving it as it is")
    except NetlinkError as e:
        state["error"] = f"configuring {ifname}: {e}"
    return state


def _add_route(ipr, index: int, net: str, gateway: str | None) -> bool:
    kw = {"dst": net, "oif": index}
    if gateway is not None:
        kw["gateway"] = gateway
    try:
        ipr.route("add", **kw)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise
        return False
    return True


def _del_route(ipr, index: int, net: str) -> None:
    try:
        ipr.route("del", dst=net, oif=index)
    except NetlinkError:
        pass


def _del_addr(ipr, index: int, address: str) -> None:
    ip, prefix = address.split("/")
    try:
        ipr.addr("del", index=index, address=ip, prefixlen=int(prefix))
    except NetlinkError:
        pass


def clear(index: int, owned_address: str | None, owned_routes: list,
          owned_address6: str | None = None) -> None:
    """Remove the routes and the addresses we added and take the link down."""
    ipr = _route()
    for net in owned_routes:
        _del_route(ipr, index, net)
    for owned in (owned_address, owned_address6):
        if owned is not None:
            _del_addr(ipr, index, owned)
    try:
        ipr.link("set", index=index, state="down")
    except NetlinkError:
        pass  # the interface went away with its file descriptor


def default_route_mac() -> str | None:
    """The MAC of the default-route interface as 12 upper-case hex digits."""
    ipr = _route()
    for route in ipr.get_default_routes(family=socket.AF_INET):
        oif = route.get_attr("RTA_OIF")
        if oif is None:
            continue
        links = ipr.get_links(oif)
        mac = links[0].get_attr("IFLA_ADDRESS") if links else None
        if mac and mac != "00:00:00:00:00:00":
            return mac.replace(":", "").upper()
    return None


OPS = {"apply": apply, "clear": clear, "mac": default_route_mac}

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


def _route() -> IPRoute:
    global _ipr
    if _ipr is None:
        _ipr = IPRoute()
    return _ipr


def handle(op: str, *args):
    """One request of the parent: "apply", "clear" or "mac"."""
    return OPS[op](*args)


def apply(index: int, ifname: str, mtu: int, txqlen: int, address: str,
          owned_address: str | None, owned_routes: list, wanted: list,
          gateway: str | None, gso_max_size: int | None = None) -> dict:
    """Bring interface `index` to `address`, `mtu`, up, and exactly the
    routes in `wanted` among those we own; change only what differs.

    Returns what we own afterwards (address, routes), warnings for the log,
    and "error" (None when all went well): on an error half-way the state
    says how far it got, so that a later clear removes what was added.
    """
    ipr = _route()
    state = {"address": owned_address, "routes": list(owned_routes), "warnings": [],
             "error": None}
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
            ip, prefix = address.split("/")
            ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
            state["address"] = address
        ipr.link("set", index=index, state="up")
        for net in [r for r in state["routes"] if r not in wanted]:
            _del_route(ipr, index, net)
            state["routes"].remove(net)
        for net in wanted:
            if net not in state["routes"]:
                if _add_route(ipr, index, net, gateway):
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


def clear(index: int, owned_address: str | None, owned_routes: list) -> None:
    """Remove the routes and the address we added and take the link down."""
    ipr = _route()
    for net in owned_routes:
        _del_route(ipr, index, net)
    if owned_address is not None:
        _del_addr(ipr, index, owned_address)
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

"""A tunnel's TUN devices seen from outside the daemons: did they carry
super-packets?

A TUN device counts one packet per read and per write of its daemon, with
the read's or write's full length (the kernel's tun driver adds each
skb's length to its tx/rx counters). Without offloads no packet on a TUN
can be longer than its MTU, so an average above the MTU during a TCP run
proves the daemon read (or wrote) super-packets, whatever the daemon is.
The offload features the daemon asked for with TUNSETOFFLOAD show in the
device's features (tx-tcp-segmentation on); they are recorded too, read
through pyroute2's ethtool ioctl from inside the namespace.

Counters and features come from the namespace by netlink and ioctl; no
daemon is asked.
"""

from __future__ import annotations

from typing import Optional

from lab.netns import Namespace, _thread_in_ns

# What TUNSETOFFLOAD turns on: TSO (IPv4, IPv6), checksum, USO.
FEATURES = ("tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-checksum-ip-generic",
            "tx-udp-segmentation")


def _link(ipr, **kw) -> Optional[dict]:
    links = ipr.get_links(**kw)
    return links[0] if links else None


def _is_tun(link) -> bool:
    info = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) if link is not None else None
    return info == "tun"


def locate(client: Namespace, server: Namespace, target: str) -> dict:
    """{"client": (ns, ifname), "server": (ns, ifname)}: the TUN the client
    side routes ``target`` through and the TUN holding ``target`` on the
    server side; a side without a TUN (a raw path) is left out."""
    out = {}
    with client.ipr() as ipr:
        routes = ipr.route("get", dst=target)
        oif = routes[0].get("RTA_OIF") if routes else None
        link = _link(ipr, index=oif) if oif else None
        if _is_tun(link):
            out["client"] = (client, link.get("IFLA_IFNAME"))
    with server.ipr() as ipr:
        for a in ipr.get_addr(family=2):
            if a.get("IFA_ADDRESS") == target:
                link = _link(ipr, index=a["index"])
                if _is_tun(link):
                    out["server"] = (server, link.get("IFLA_IFNAME"))
                break
    return out


def counters(tuns: dict) -> dict:
    """role -> {tx_packets, tx_bytes, rx_packets, rx_bytes} (64-bit stats)."""
    out = {}
    for role, (ns, ifname) in tuns.items():
        with ns.ipr() as ipr:
            link = _link(ipr, ifname=ifname)
        stats = link.get("IFLA_STATS64") if link is not None else None
        if stats is None:
            continue
        out[role] = {k: stats[k] for k in ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes")}
    return out


def features(ns: Namespace, ifname: str) -> dict:
    """name -> on/off of FEATURES on one link ({} if ethtool cannot say)."""
    from pyroute2.ethtool.ioctl import EthtoolError, IoctlEthtool

    try:
        # The ioctl socket must live in the namespace; later calls on it
        # reach the device from any thread.
        with _thread_in_ns(ns.name):
            eth = IoctlEthtool(ifname)
        try:
            feats = eth.get_features()
            return {name: bool(feats.is_active(name)) for name in FEATURES if name in feats}
        finally:
            eth.close()
    except (OSError, EthtoolError):
        return {}


def delta(before: dict, after: dict) -> dict:
    return {role: {k: after[role][k] - before[role][k] for k in after[role]}
            for role in after if role in before}


def summary(d: dict, feats: dict, mtu: int, reverse: bool) -> dict:
    """What the TCP run's counters say: the sending side's average TUN read
    (the daemon reads what the kernel transmits into the TUN), the receiving
    side's average write, and whether the reads were super-packets (an
    average above the MTU, impossible one packet per read)."""
    send, recv = ("server", "client") if reverse else ("client", "server")
    out: dict = {"counters": d, "features": feats, "sender": send, "mtu": mtu}
    s = d.get(send)
    if s and s["tx_packets"]:
        out["read_avg_bytes"] = round(s["tx_bytes"] / s["tx_packets"])
        out["super_packets"] = out["read_avg_bytes"] > mtu
    r = d.get(recv)
    if r and r["rx_packets"]:
        out["write_avg_bytes"] = round(r["rx_bytes"] / r["rx_packets"])
    if feats.get(send):
        out["sender_tso"] = feats[send].get("tx-tcp-segmentation")
    return out

"""Which tunnel addresses a client may hold: one policy for both protocols'
registrations (legacy REGISTER, v2 INIT), for a configuration reload, for
the configuration file's own client sections, and for the relay.

A client never holds:
- an address of the server itself: every `gateway_ip=` of the configuration
  and the `-l` address of a `--server-tun` server ("server-address");
- the network or broadcast address of a tunnel network ("tunnel-network");
- an address inside a network the server routes to its clients (any
  `route_cidr=`), unless it is inside a network listed behind that very
  client (`allowed_cidr=` of its section) ("server-route"). A route that
  holds a whole tunnel network (10.0.0.0/8 pushed over a 10.0.0.0/24
  tunnel) does not reserve that tunnel network: there the tunnel, the more
  specific of the two, decides;
- when a tunnel network is known, an address outside every one of them
  ("outside-tunnel").

The tunnel networks: `client_cidr=` of [defaults] if given; else the
network of [defaults] `gateway_ip` with the prefix of [defaults]
`local_cidr`, or of the widest client-section `local_cidr` that holds the
gateway, or /24 (the prefix the daemon gives a --server-tun TUN without
-l), plus, for a client section with a `gateway_ip` of its own, that
gateway's network with the prefix of its `local_cidr`; and always the
network of the server's own TUN address. Without any of
these (no configuration, no server TUN) no containment rule applies.

Free of I/O and of camex.daemon.config (which uses it): the configuration is read
through its attributes. Addresses are `ipaddress` objects of either family;
nothing here assumes IPv4, so IPv6 tunnel addresses slot in.
"""

from __future__ import annotations

import ipaddress

# Refusal reasons, as counted by `camex status` (address_refusals).
SERVER_ADDRESS = "server-address"
TUNNEL_NETWORK = "tunnel-network"
SERVER_ROUTE = "server-route"
OUTSIDE_TUNNEL = "outside-tunnel"
REASONS = (SERVER_ADDRESS, TUNNEL_NETWORK, SERVER_ROUTE, OUTSIDE_TUNNEL)

DEFAULT_PREFIX = {4: 24, 6: 64}   # a gateway without a prefix anywhere


class Refusal:
    """Why an address was refused: `reason` (one of REASONS) and a message
    that names the address, for a log line or the client's refusal."""

    __slots__ = ("reason", "message")

    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message

    def __repr__(self) -> str:
        return f"Refusal({self.reason!r}, {self.message!r})"


class AddressPolicy:
    """The rules above, for one configuration and server TUN.

    `server_addresses`, `tunnel_networks`, `routes`: ipaddress objects;
    `behind`: lower-cased client ID -> networks behind that client."""

    def __init__(self, server_addresses=(), tunnel_networks=(), routes=(), behind=None):
        self.server_addresses = frozenset(ipaddress.ip_address(a) for a in server_addresses)
        self.tunnel_networks = tuple(dict.fromkeys(
            ipaddress.ip_network(n) for n in tunnel_networks))
        # A route that holds a whole tunnel network reserves nothing inside
        # it (see the module's docstring): keep, per route, those to spare.
        self.routes = tuple(
            (r, tuple(t for t in self.tunnel_networks
                      if t.version == r.version and t.subnet_of(r)))
            for r in dict.fromkeys(ipaddress.ip_network(n) for n in routes))
        self.behind = {k: tuple(v) for k, v in (behind or {}).items()}
        # The relay's test, one set lookup a packet: the packed addresses.
        self.server_packed = frozenset(a.packed for a in self.server_addresses)

    @classmethod
    def from_config(cls, config, server_interfaces=()) -> AddressPolicy:
        """From a camex.daemon.config.ServerConfig (or None) and the server TUN's
        addresses (ipaddress interfaces: `-l` of --server-tun)."""
        ifaces = [ipaddress.ip_interface(i) for i in server_interfaces]
        servers = [i.ip for i in ifaces]
        tunnels = [i.network for i in ifaces if i.network.num_addresses > 2]
        routes, behind = [], {}
        if config is not None:
            d = config.defaults
            # client_cidr= per family: a family it does not name is derived.
            given = list(getattr(d, "client_cidr", None) or ())
            tunnels += given + [n for n in _derived_tunnel(config)
                                if not any(g.version == n.version for g in given)]
            profiles = [d] + [s.profile for s in config.clients.values()]
            servers += [g for p in profiles for g in (p.gateway_ip, getattr(p, "gateway_ip6", None))
                        if g is not None]
            for p in profiles:
                routes += p.routes
            behind = {cid: list(s.profile.allowed) for cid, s in config.clients.items()
                      if s.profile.allowed}
        return cls(servers, tunnels, routes, behind)

    # ----------------------------------------------------------- checks

    def is_server_address(self, address) -> bool:
        return ipaddress.ip_address(address) in self.server_addresses

    def check(self, address, client: str | None = None) -> Refusal | None:
        """None if a client may hold `address`, else the Refusal. `client`:
        the lower-cased client ID whose section the claimant proved to be
        (its own key, or its v2 client ID), None for anyone else."""
        a = ipaddress.ip_address(address)
        if a in self.server_addresses:
            return Refusal(SERVER_ADDRESS, f"{a} is an address of the server")
        for net in self.tunnel_networks:
            if a.version != net.version or net.prefixlen >= net.max_prefixlen - 1:
                continue   # a /31 or /32 (IPv6 /127, /128) has no such addresses
            if a == net.network_address:
                return Refusal(TUNNEL_NETWORK, f"{a} is the network address of {net}")
            if a.version == 4 and a == net.broadcast_address:
                return Refusal(TUNNEL_NETWORK, f"{a} is the broadcast address of {net}")
        for route, spared in self.routes:
            if a.version != route.version or a not in route:
                continue
            if any(a in t for t in spared):
                continue
            if any(a.version == n.version and a in n for n in self.behind.get(client, ())):
                continue
            return Refusal(SERVER_ROUTE, f"{a} is inside {route}, a network the server "
                                         f"routes to its clients")
        same = [n for n in self.tunnel_networks if n.version == a.version]
        if same and not any(a in n for n in same):
            nets = ", ".join(map(str, same))
            return Refusal(OUTSIDE_TUNNEL, f"{a} is outside the tunnel network ({nets})")
        return None

    def network_refusal(self, network) -> Refusal | None:
        """A network that may be routed to a client (`allowed_cidr=`): None
        unless it holds an address of the server."""
        net = ipaddress.ip_network(network)
        for a in sorted(self.server_addresses, key=lambda x: (x.version, x)):
            if a.version == net.version and a in net:
                return Refusal(SERVER_ADDRESS, f"{net} holds {a}, an address of the server")
        return None


# (gateway, local address) attribute pairs of a profile: the IPv4 pair and,
# on a configuration that has them, the IPv6 pair (`gateway_ip6=` is
# written `gateway_ip=` with an IPv6 value in the file).
_PAIRS = (("gateway_ip", "local_cidr"), ("gateway_ip6", "local_cidr6"))


def _derived_tunnel(config) -> list:
    """The tunnel networks without `client_cidr=` (see the module's
    docstring), and that of every client section with a gateway_ip of its
    own (its local_cidr's prefix: a second subnet served by the server);
    per address family."""
    out = []
    for gw_attr, local_attr in _PAIRS:
        out += _defaults_tunnel(config, gw_attr, local_attr)
        for s in config.clients.values():
            gw = getattr(s.profile, gw_attr, None)
            local = getattr(s.profile, local_attr, None)
            if gw is not None and local is not None and gw.version == local.version:
                out.append(ipaddress.ip_interface((gw, local.network.prefixlen)).network)
    return out


def _defaults_tunnel(config, gw_attr: str = "gateway_ip", local_attr: str = "local_cidr") -> list:
    d = config.defaults
    gw, local = getattr(d, gw_attr, None), getattr(d, local_attr, None)
    if gw is None:
        return [local.network] if local is not None else []
    if local is not None and local.version == gw.version:
        prefix = local.network.prefixlen
    else:
        holding = [n.network for s in config.clients.values()
                   for n in (getattr(s.profile, local_attr, None),)
                   if n is not None and n.version == gw.version and gw in n.network]
        prefix = min((n.prefixlen for n in holding), default=DEFAULT_PREFIX[gw.version])
    return [ipaddress.ip_interface((gw, prefix)).network]


def config_errors(config, server_interfaces=()) -> list:
    """[(line, message)] for every client section of `config` that breaks
    the policy: its address (own `local_cidr=` or that of [defaults]) or a
    network behind it (`allowed_cidr=`) that holds a server address."""
    policy = AddressPolicy.from_config(config, server_interfaces)
    lines = getattr(config, "key_lines", {})
    out = []
    for cid, section in config.clients.items():
        prof = config.profile_for(cid)
        for attr in ("local_cidr", "local_cidr6"):
            local = getattr(prof, attr, None)
            if local is None:
                continue
            r = policy.check(local.ip, cid)
            if r is not None:
                own = getattr(section.profile, attr, None) is not None
                line = lines.get((cid if own else None, attr), section.line)
                where = "" if own else " (from [defaults])"
                out.append((line, f"[client {section.id}] local_cidr={local}"
                                  f"{where}: {r.message} ({r.reason})"))
        for net in section.profile.allowed:
            r = policy.network_refusal(net)
            if r is not None:
                line = lines.get((cid, "allowed_cidr", str(net)), section.line)
                out.append((line, f"[client {section.id}] allowed_cidr={net}: {r.message}"))
    return out

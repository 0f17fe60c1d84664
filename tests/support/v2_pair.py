"""A v2 server core and two v2 clients (cam1 with the global passphrase,
cam2 with its own) wired in memory through their to_net/outbox lists: the
set-up of tests/unit/test_v2_core.py and test_v2_lone_path.py."""

from camex.v2 import wire

CONF = """
[defaults]
gateway_ip = 10.0.0.1
route_cidr = 10.251.0.0/24
[client cam1]
local_cidr = 10.0.0.2/24
mtu = 1400
[client cam2]
local_cidr = 10.0.0.3/24
psk = cam2-own-secret
"""
PW = b"global-secret"
A1, A2 = ("192.0.2.1", 4001), ("192.0.2.2", 4002)


class Wire:
    """Moves to_net/outbox between cores until nothing is left."""

    def __init__(self, server, clients):
        self.server, self.clients, self.now = server, clients, 100.0

    def pump(self):
        for _ in range(20):
            moved = False
            for addr, c in self.clients.items():
                out, c.to_net[:] = list(c.to_net), []
                for d in out:
                    moved = True
                    if wire.is_v2(d):
                        self.server.datagram_received(d, addr, self.now)
            out, self.server.outbox[:] = list(self.server.outbox), []
            for d, addr in out:
                moved = True
                self.clients[addr].datagram_received(d, self.now)
            if not moved:
                return

    def tick(self, seconds, step=0.1):
        end = self.now + seconds
        while self.now < end:
            self.now += step
            for c in list(self.clients.values()) + [self.server]:
                if c.next_deadline() <= self.now:
                    c.on_timer(self.now)
            self.pump()


def connect(srv, c1, c2) -> Wire:
    """A Wire between the server and the two clients (cam1 at A1, cam2 at
    A2), both started and connected, their handshakes pumped through."""
    w = Wire(srv, {A1: c1, A2: c2})
    for c in (c1, c2):
        c.start(w.now)
        c.connected(w.now)
    w.pump()
    return w

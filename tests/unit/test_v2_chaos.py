"""v2 over a bad network: loss, duplication and reordering while rekeying,
roaming and restarting. Seeded, so a failure replays exactly."""

import random
import struct

import pytest

from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.testing.memlab import MemLab, Profile, ipv4, make_server

G = b"G" * 32
PROFILES = {"cam1": Profile("10.0.0.2/24", "10.0.0.1"), "cam2": Profile("10.0.0.3/24", "10.0.0.1")}


class ChaosLab(MemLab):
    """Loses, duplicates and delays datagrams (delayed ones arrive later,
    i.e. out of order)."""

    def __init__(self, server, rnd, loss=0.2, dup=0.1, delay=0.1):
        super().__init__(server)
        self.rnd, self.loss, self.dup, self.delay = rnd, loss, dup, delay
        self.later = []

    def to_server(self, data, addr, name=None):
        self._chaos(super().to_server, data, addr)

    def to_client(self, data, addr):
        self._chaos(super().to_client, data, addr)

    def _chaos(self, deliver, data, addr):
        r = self.rnd.random()
        if r < self.loss:
            self.log.append((self.now, "lost", None, bytes(data)))
            return
        if r < self.loss + self.delay:
            self.later.append((self.now + self.rnd.uniform(0.05, 0.5), deliver, data, addr))
            return
        deliver(data, addr)
        if r > 1 - self.dup:
            deliver(data, addr)

    def fire(self):
        due = [x for x in self.later if x[0] <= self.now]
        self.later = [x for x in self.later if x[0] > self.now]
        for _, deliver, data, addr in due:
            deliver(data, addr)
        super().fire()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tunnel_survives_a_bad_network(seed):
    rnd = random.Random(seed)
    lab = ChaosLab(make_server(global_psk=G, profiles=PROFILES), rnd)
    lab.add("a", ClientSession([G], "cam1", wire.Request(auto=True)), ("192.0.2.1", 1000))
    lab.add("b", ClientSession([G], "cam2", wire.Request(auto=True)), ("192.0.2.2", 2000))
    lab.start("a")
    lab.start("b")
    n = [0]
    sent_by_a = [0]

    def traffic(lab):
        n[0] += 1
        for name, src, dst in (("a", "10.0.0.2", "10.0.0.3"), ("b", "10.0.0.3", "10.0.0.2")):
            if lab.clients[name].established:
                sent_by_a[0] += name == "a"
                lab.send_from(name, [ipv4(src, dst, struct.pack("!I", n[0]))])
        if n[0] % 200 == 0:                      # NAT rebinding now and then
            lab.addrs["a"] = ("192.0.2.1", 1000 + n[0])
        if n[0] == 3000:                         # a crash-restart of the server
            lab.server = make_server(global_psk=G, profiles=PROFILES)

    lab.run(600.0, step=0.1, each=traffic)
    from_a = sum(1 for d in lab.server_got for p in d.packets if p[12:16] == bytes([10, 0, 0, 2]))
    # 20 % loss on the wire; the protocol itself (rekeys every 120 s, a
    # roam every 20 s, one server crash) must lose little more than that.
    assert from_a >= 0.7 * sent_by_a[0]
    lab.loss = lab.dup = lab.delay = 0.0         # then a clean network
    lab.run(40.0, step=0.1, each=traffic)
    before = len(lab.server_got)
    for name, src, dst in (("a", "10.0.0.2", "10.0.0.3"), ("b", "10.0.0.3", "10.0.0.2")):
        assert lab.clients[name].established
        lab.send_from(name, [ipv4(src, dst, b"final")])
        assert lab.peer(name) is not None        # the endpoint followed every rebinding
    assert len(lab.server_got) == before + 2
    got_b = len(lab.client_got["b"])
    lab.send_to("b", [ipv4("10.0.0.2", "10.0.0.3", b"down")])
    assert len(lab.client_got["b"]) == got_b + 1
    # Duplicated datagrams are delivered once: the replay window drops copies.
    seen = {}
    for d in lab.server_got:
        for p in d.packets:
            key = (p[12:16], p[20:])
            seen[key] = seen.get(key, 0) + 1
    assert max(seen.values()) == 1
    assert lab.server.stats["replay"] + sum(c.stats["replay"] for c in lab.clients.values()) > 0

"""The v2 sessions' AEAD objects (camex.v2.session.AEADS): bounded by
recent use, not by a count. A fleet sending in turn keeps every object
(no object built after the first round, however many senders), keys left
idle for two periods give theirs back, a hard cap bounds any pattern, each
key gets its cipher's class, and sessions whose objects were given back
still seal and open through the cores."""

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from camex.daemon.config import parse_config
from camex.testing.memlab import det_rng, ipv4
from camex.v2 import lone, session, wire
from camex.v2.core import V2ClientCore, V2ServerCore
from camex.v2.session import AesKey, Session, Timers, data_keys
from tests.support.v2_pair import CONF, PW, connect

FLEET = 1200   # senders: more than the 512 places of a count-bounded cache


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def builds(monkeypatch):
    """Every AEAD object built, in order (the cache's own counter aside)."""
    made = []
    real = session.aead_for

    def counting(key):
        made.append(key)
        return real(key)

    monkeypatch.setattr(session, "aead_for", counting)
    return made


def test_keys_used_in_turn_build_each_object_once(builds):
    cache = session._AeadCache()
    keys = [os.urandom(32) for _ in range(FLEET)]
    first = [cache.get(k) for k in keys]
    assert len(builds) == FLEET
    for _ in range(3):
        assert [cache.get(k) for k in keys] == first   # the same objects
    assert len(builds) == FLEET


def test_a_fleet_of_sessions_sealing_in_turn_builds_no_object_after_the_first_round(
        monkeypatch, builds):
    """Sessions as a server's peers would use them, both directions of each
    one in turn: every datagram opens with its plaintext, and the objects
    built in the first round serve all the later ones."""
    monkeypatch.setattr(session, "AEADS", session._AeadCache())
    t = Timers()
    pairs = []
    for i in range(FLEET // 2):
        a, b = os.urandom(32), os.urandom(32)
        send, recv = data_keys(a, b, aes=i % 2 == 0)
        pairs.append((Session(i, 10_000 + i, send, recv, True, 0.0, t),
                      Session(10_000 + i, i, recv, send, False, 0.0, t)))
    after_first = None
    for rnd in range(4):
        for i, (cli, srv) in enumerate(pairs):
            for src, dst, text in ((cli, srv, b"up %d %d" % (rnd, i)),
                                   (srv, cli, b"down %d %d" % (rnd, i))):
                d = src.seal(text, 1.0)
                _, _, counter = wire.parse_data_header(d)
                assert dst.open(d, counter, 1.0) == text
        if rnd == 0:
            after_first = len(builds)
    assert after_first == FLEET
    assert len(builds) == FLEET


def test_keys_idle_for_two_periods_give_their_objects_back(builds):
    clock = Clock()
    cache = session._AeadCache(period=1.0, clock=clock)
    idle = [os.urandom(32) for _ in range(500)]
    streaming = os.urandom(32)
    for k in idle:
        cache.get(k)
    obj = cache.get(streaming)
    assert len(cache) == 501
    # Three seconds of: the streaming key every 0.1 s, and a keepalive of
    # some other client (a miss, which may rotate) every 0.5 s.
    for step in range(1, 31):
        clock.t = step * 0.1
        assert cache.get(streaming) is obj
        if step % 5 == 0:
            cache.get(os.urandom(32))
    # The idle keys' objects are gone; what is left was used in the last
    # two periods: the streaming key and the last keepalives.
    assert len(cache) <= 4
    assert cache.get(streaming) is obj
    n = len(builds)
    cache.get(idle[0])                 # used again: built again
    assert len(builds) == n + 1
    assert cache.built == len(builds)


def test_a_key_used_once_a_period_keeps_its_object(builds):
    clock = Clock()
    cache = session._AeadCache(period=1.0, clock=clock)
    slow = os.urandom(32)
    obj = cache.get(slow)
    for step in range(1, 40):
        clock.t = step * 0.25
        cache.get(os.urandom(32))      # a miss every 0.25 s: rotations each period
        if step % 4 == 0:
            assert cache.get(slow) is obj
    assert len(cache) <= 10


def test_nothing_grows_past_the_cap(builds):
    cache = session._AeadCache(cap=100, clock=Clock())   # the clock stands still
    keys = [os.urandom(32) for _ in range(1000)]
    for k in keys:
        cache.get(k)
        assert len(cache) <= 200
    n = len(builds)
    for k in keys[-100:]:              # the most recent keys are still there
        cache.get(k)
    assert len(builds) == n


def test_each_key_gets_its_ciphers_object():
    cache = session._AeadCache()
    aes, chacha = AesKey(os.urandom(32)), os.urandom(32)
    assert type(cache.get(aes)) is AESGCM
    assert type(cache.get(chacha)) is ChaCha20Poly1305
    assert type(session.AEADS.get(AesKey(os.urandom(32)))) is AESGCM
    assert type(session.AEADS.get(os.urandom(32))) is ChaCha20Poly1305
    nonce = bytes(12)
    sealed = cache.get(aes).encrypt(nonce, b"x", b"")
    assert AESGCM(bytes(aes)).decrypt(nonce, sealed, b"") == b"x"


@pytest.mark.parametrize("aes", [False, True], ids=["chacha20-poly1305", "aes-256-gcm"])
def test_cores_still_carry_traffic_after_their_objects_were_given_back(monkeypatch, aes):
    clock = Clock()
    cache = session._AeadCache(period=1.0, clock=clock)
    monkeypatch.setattr(session, "AEADS", cache)
    monkeypatch.setattr(lone, "AEADS", cache)
    srv = V2ServerCore(global_passphrase=PW, config=parse_config(CONF), local_delivery=True,
                       rng=det_rng(b"srv"), aes=aes)
    c1 = V2ClientCore(auto=True, passphrase=PW, client_id="cam1", rng=det_rng(b"c1"), aes=aes)
    c2 = V2ClientCore(auto=True, passphrase=b"cam2-own-secret", client_id="CAM2",
                      rng=det_rng(b"c2"), aes=aes)
    w = connect(srv, c1, c2)
    assert c1.established and c2.established
    assert (type(c1.session.current.send_key) is AesKey) == aes

    def traffic(tag: bytes):
        """c1 and c2 to the server's TUN, in turn, and the server to c1."""
        for i in range(3):
            c1.tun_packet(ipv4("10.0.0.2", "10.0.0.1", tag + b" c1 %d" % i), w.now)
            c2.tun_packet(ipv4("10.0.0.3", "10.0.0.1", tag + b" c2 %d" % i), w.now)
            w.pump()
        srv.tun_packet(ipv4("10.0.0.1", "10.0.0.2", tag + b" down"), w.now)
        w.pump()
        up = [bytes(p)[20:] for p in srv.to_tun]
        down = [bytes(p)[20:] for p in c1.to_tun]
        srv.to_tun.clear()
        c1.to_tun.clear()
        return up, down

    assert traffic(b"before") == ([b"before c%d %d" % (c, i) for i in range(3) for c in (1, 2)],
                                  [b"before down"])
    assert len(cache) >= 2
    for step in (1, 2):                # two periods of other clients' keepalives only
        clock.t = step * 1.1
        cache.get(os.urandom(32))
    assert len(cache) == 2             # the keepalives' keys: the cores' are gone
    built = cache.built
    assert traffic(b"after") == ([b"after c%d %d" % (c, i) for i in range(3) for c in (1, 2)],
                                 [b"after down"])
    assert cache.built > built         # objects built again, from the sessions' keys

"""The live fuzzer's datagram generator (camex.testing.fuzzer): what it claims
about each category holds, and it never impersonates an honest client."""

import collections
import ipaddress

import pytest

from camex.legacy import codec
from camex.proto import KeyRing, NoKeyError
from camex.testing.fuzzer import AUTH_CATEGORIES, BASE_CATEGORIES, DatagramFuzzer

PASS = b"demo-global-secret"


@pytest.fixture(scope="module")
def fz():
    return DatagramFuzzer(seed=7, passphrase=PASS, pool_size=350)


def test_every_category_in_pool_and_stream(fz):
    assert {c for c, _ in fz.pool} == set(BASE_CATEGORIES + AUTH_CATEGORIES)
    counts = collections.Counter(c for c, _ in fz.datagrams(5000))
    assert set(counts) == set(BASE_CATEGORIES + AUTH_CATEGORIES)
    assert min(counts.values()) > 300


def test_unauthenticated_categories_never_open(fz):
    ring = KeyRing([PASS])
    for cat, data in list(fz.pool) + list(fz.datagrams(3000)):
        if cat in AUTH_CATEGORIES:
            continue
        with pytest.raises((codec.CodecError, NoKeyError)):
            ring.open(data)


def test_authentic_categories_open_and_spare_honest_clients(fz):
    ring = KeyRing([PASS])
    protected = {ipaddress.IPv4Address(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3")}
    n = 0
    for cat, data in list(fz.pool) + list(fz.datagrams(2000)):
        if cat not in AUTH_CATEGORIES:
            continue
        opened = ring.open(data)
        n += 1
        pt = opened.plaintext
        if opened.header.type == codec.T_DATA and len(pt) >= 16 and pt[0] >> 4 == 4:
            assert ipaddress.IPv4Address(pt[12:16]) not in protected
        if pt.startswith(b"CX2P REGISTER"):
            try:
                c = codec.parse_control(pt)
            except codec.CodecError:
                continue
            assert (c.get("CLIENT_ID") or "").lower() not in {"c1", "c2"}
            assert c.get("LOCAL_IP") not in {"10.0.0.2", "10.0.0.3"}
    assert n >= 500


def test_authentic_datagrams_are_fresh_not_replays(fz):
    """Each sender prefix counts up: the server's replay window accepts them."""
    ring = KeyRing([PASS])
    last = {}
    n = 0
    for c, d in list(fz.datagrams(3000)):
        if c not in AUTH_CATEGORIES:
            continue
        h = ring.open(d).header
        assert h.seq > last.get(h.prefix, -1)
        last[h.prefix] = h.seq
        n += 1
    assert n > 500 and len(last) > 100


def test_bounded_number_of_senders():
    fz = DatagramFuzzer(seed=5, passphrase=PASS, pool_size=100, prefixes=8)
    prefixes = {d[5:9] for c, d in fz.datagrams(2000) if c in AUTH_CATEGORIES}
    assert 1 <= len(prefixes) <= 8


def test_mutated_valid_datagrams_fail_authentication(fz):
    ring = KeyRing([PASS])
    cats = collections.Counter()
    for cat, data in fz.pool:
        if cat != "mutated":
            continue
        try:
            ring.open(data)
        except codec.CodecError:
            cats["shape"] += 1
        except NoKeyError:
            cats["tag"] += 1
    assert cats["shape"] > 0 and cats["tag"] > 0  # both checks are reached


def test_same_seed_same_traffic():
    a = DatagramFuzzer(seed=3, passphrase=None, pool_size=60)
    b = DatagramFuzzer(seed=3, passphrase=None, pool_size=60)
    assert a.pool == b.pool
    assert list(a.datagrams(200)) == list(b.datagrams(200))
    assert {c for c, _ in a.pool} == set(BASE_CATEGORIES)

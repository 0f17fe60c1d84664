"""The --framed train format of bench/naive_tunnel.py, which the framed
floor tunnel and the relay floor share: a train seals and gathers back to
what was sealed, and a read that is not one whole train in order is
refused (the floor drops it, as TCP then sends it again)."""

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.naive_tunnel import BULK_SEGMENT, FRAMED_HDR, _bench_keys, _framing


def test_a_train_gathers_back_and_opens_at_the_other_end():
    sealed, gathered = _framing()
    a, b = ("10.250.0.2", 9000), ("10.250.0.1", 9000)
    (tx, _), (_, rx) = _bench_keys(a, b, AESGCM), _bench_keys(b, a, AESGCM)
    plain = bytes(range(256)) * 240                    # 61,440 bytes: 43 datagrams
    train = bytes(sealed(tx.encrypt, 7, plain))
    pieces = [train[i:i + BULK_SEGMENT] for i in range(0, len(train), BULK_SEGMENT)]
    assert len(pieces) == 43 and {len(p) for p in pieces[:-1]} == {BULK_SEGMENT}
    # Every datagram carries the counter, its index and the count.
    assert [FRAMED_HDR.unpack_from(p)[:3] for p in pieces] == [(7, i, 43) for i in range(43)]
    head, ct = gathered(train)
    assert rx.decrypt(b"\0\0\0\0" + head[:8], ct, head) == plain
    # A datagram lost, or two swapped: not one whole train.
    assert gathered(b"".join(pieces[:20] + pieces[21:])) is None
    assert gathered(b"".join(pieces[:5] + [pieces[6], pieces[5]] + pieces[7:])) is None


def test_each_pair_of_endpoints_has_its_own_keys():
    a, b, c = ("10.250.0.2", 9000), ("10.250.0.1", 9000), ("10.250.1.1", 9000)
    ab_send, ab_recv = _bench_keys(a, b, AESGCM)
    ba_send, ba_recv = _bench_keys(b, a, AESGCM)
    ac_send, _ = _bench_keys(a, c, AESGCM)
    nonce, msg = bytes(12), b"x" * 64
    sealed = ab_send.encrypt(nonce, msg, None)
    assert ba_recv.decrypt(nonce, sealed, None) == msg          # the peer opens it
    assert ab_send.encrypt(nonce, msg, None) != ba_send.encrypt(nonce, msg, None)
    assert ac_send.encrypt(nonce, msg, None) != sealed          # another pair, another key

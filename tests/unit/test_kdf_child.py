"""scrypt in a helper process (what the daemon does, kdf.IN_CHILD) gives the
same keys as in-process and as an independent scrypt (hashlib's), derives
all of a server's keys in one helper, and falls back to deriving in-process
when the helper fails."""

import hashlib

import pytest

from camex.base import child
from camex.v2 import kdf


def reference(passphrase: bytes, client_id):
    """RFC 7914 scrypt through hashlib, with the parameters docs/PROTOCOL.md gives."""
    salt = b"camex v2 psk: global" if client_id is None else \
        b"camex v2 psk: client " + client_id.lower().encode()
    return hashlib.scrypt(passphrase, salt=salt, n=2**14, r=8, p=1, maxmem=64 << 20, dklen=32)


@pytest.fixture
def in_child(monkeypatch):
    monkeypatch.setattr(kdf, "IN_CHILD", True)
    monkeypatch.setattr(kdf, "_cache", {})
    return child.STATS.setdefault("kdf", {"runs": 0, "peak_rss_kib": 0})


@pytest.mark.parametrize("passphrase, client_id", [
    (b"camex-bench-passphrase", None),
    (b"own pass", "Cam1"),
    (bytes(range(1, 256)) * 4, "001122AABBCC"),  # 1020 bytes, not UTF-8
])
def test_helper_keys_are_bit_identical(in_child, monkeypatch, passphrase, client_id):
    runs = in_child["runs"]
    key = kdf.derive_psk(passphrase, client_id)
    assert in_child["runs"] == runs + 1
    assert key == reference(passphrase, client_id)
    monkeypatch.setattr(kdf, "IN_CHILD", False)
    monkeypatch.setattr(kdf, "_cache", {})
    assert kdf.derive_psk(passphrase, client_id) == key


def test_a_server_derives_all_its_keys_in_one_helper_and_caches_them(in_child):
    runs = in_child["runs"]
    sections = {"cam1": b"one", "CAM2": b"two", "cam3": b""}  # no psk= for cam3
    store = kdf.KeyStore(b"global", sections)
    assert in_child["runs"] == runs + 1
    assert store.psk_for("Cam1") == reference(b"one", "cam1")
    assert store.psk_for("cam2") == reference(b"two", "CAM2")
    assert store.psk_for("cam3") == store.psk_for("other") == reference(b"global", None)
    # A reload with the same passphrases starts no helper.
    kdf.KeyStore(b"global", sections)
    assert in_child["runs"] == runs + 1
    # The client's two candidates, one of them new: one more helper.
    assert kdf.client_candidates(b"one", "cam9") == [reference(b"one", "cam9"),
                                                     reference(b"one", None)]
    assert in_child["runs"] == runs + 2


def test_a_failing_helper_falls_back_to_deriving_here(in_child, monkeypatch, caplog):
    def broken(*a, **kw):
        raise child.HelperError("the kdf helper was killed by signal 9 (SIGKILL) before it answered")

    monkeypatch.setattr(child, "run_once", broken)
    with caplog.at_level("WARNING", logger="camex"):
        assert kdf.derive_psk(b"pw", "x") == reference(b"pw", "x")
    assert "SIGKILL" in caplog.text and "deriving here" in caplog.text


def test_passphrase_length_is_checked_before_any_helper(in_child):
    runs = in_child["runs"]
    for bad in (b"", b"x" * 1025):
        with pytest.raises(ValueError, match="passphrase length"):
            kdf.derive_psk(bad)
    assert in_child["runs"] == runs

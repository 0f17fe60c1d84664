"""The v2 data cipher: AES-256-GCM when the client's INIT and the server's
RESP both announce FEATURE_AES256GCM, ChaCha20-Poly1305 otherwise; the key
log, camex-dissect's key log reader, the option and the CPU check."""

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from camex.daemon.options import UsageError, parse_args, wants_aes
from camex.io.cpu import hardware_aes
from camex.proto.v2 import KeyLog
from camex.testing.memlab import MemLab, Profile, ipv4, make_server
from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.v2.core import V2ClientCore
from camex.v2.noise import nonce_bytes
from camex.v2.session import AesKey, Session, Timers, cipher_name, data_keys

G = b"G" * 32
PROFILES = {"cam1": Profile("10.0.0.2/24", "10.0.0.1")}
ADDR = ("192.0.2.10", 4000)
AES = wire.FEATURE_AES256GCM


def tunnel(client_features: int, server_aes: bool):
    lines = []
    lab = MemLab(make_server(global_psk=G, profiles=PROFILES, keylog=lines.append,
                             aes=server_aes))
    client = ClientSession([G], "cam1", wire.Request(auto=True, features=client_features))
    lab.add("c", client, ADDR)
    lab.start("c")
    assert client.established
    lab.send_from("c", [ipv4("10.0.0.2", "10.251.0.9", b"up")])
    lab.send_to("c", [ipv4("10.251.0.9", "10.0.0.2", b"down")])
    # Both directions arrived, whatever the cipher.
    assert [bytes(p)[-2:] for d in lab.server_got for p in d.packets] == [b"up"]
    assert [bytes(p)[-4:] for p in lab.client_got["c"]] == [b"down"]
    return lab, client, lines


def server_session(lab):
    return next(iter(lab.server.peers.values())).current


@pytest.mark.parametrize("client_features, server_aes, expect", [
    (AES | wire.FEATURE_BULK, True, "aes-256-gcm"),
    (AES, True, "aes-256-gcm"),
    (AES | wire.FEATURE_BULK, False, "chacha20-poly1305"),   # the server has no AES
    (wire.FEATURE_BULK, True, "chacha20-poly1305"),           # the client has none
    (0, True, "chacha20-poly1305"),                           # an older client
])
def test_both_ends_agree_on_the_cipher(client_features, server_aes, expect):
    lab, client, _ = tunnel(client_features, server_aes)
    assert cipher_name(client.current.send_key) == expect
    assert cipher_name(server_session(lab).send_key) == expect


def test_aes_sessions_seal_with_aes_gcm_and_log_it():
    lab, client, lines = tunnel(AES | wire.FEATURE_BULK, True)
    assert len(lines) == 2 and all(line.endswith(" aes-256-gcm") for line in lines)
    keys = {int(i, 16): bytes.fromhex(k) for _, i, k, _ in (line.split() for line in lines)}
    data = lab.sent("c2s", kind=wire.T_DATA) + lab.sent("s2c", kind=wire.T_DATA)
    assert len(data) >= 3   # key confirmation, then one packet each way
    log = KeyLog(lines)     # camex-dissect's reader of the same lines
    for d in data:
        _, idx, ctr = wire.parse_data_header(d)
        plain = AESGCM(keys[idx]).decrypt(nonce_bytes(ctr), d[16:], d[:16])
        assert wire.parse_records(plain) is not None
        with pytest.raises(InvalidTag):
            ChaCha20Poly1305(keys[idx]).decrypt(nonce_bytes(ctr), d[16:], d[:16])
        assert log.open(d) is not None


def test_chacha_sessions_log_as_before():
    _, _, lines = tunnel(wire.FEATURE_BULK, False)
    assert [len(line.split()) for line in lines] == [3, 3]


def test_a_key_log_line_without_the_cipher_does_not_open_aes_data():
    lab, _, lines = tunnel(AES, True)
    stripped = KeyLog(line.rsplit(" ", 1)[0] for line in lines)
    d = lab.sent("c2s", kind=wire.T_DATA)[-1]
    assert stripped.open(d) is None


def test_bulk_frames_under_aes():
    t = Timers()
    send, recv = data_keys(b"k" * 32, b"r" * 32, True)
    a = Session(1, 2, send, recv, True, 0.0, t)
    b = Session(2, 1, recv, send, False, 0.0, t)
    plain = bytes(range(256)) * 200
    run = a.seal_frame(plain, 0.0, 1452)[0]
    dgrams = run.datagrams()
    assert len(dgrams) > 30
    count = len(dgrams)
    ct = b"".join(bytes(d[wire.HEADER_BULK:]) for d in dgrams)
    assert b.open_frame(ct, 0, 0, count, 0.0) == plain
    header = wire.bulk_header(2, 0, count, 0)
    assert AESGCM(bytes(send)).decrypt(nonce_bytes(0), ct, header) == plain


def test_data_keys_and_names():
    assert data_keys(b"s", b"r", False) == (b"s", b"r")
    s, r = data_keys(b"s" * 32, b"r" * 32, True)
    assert type(s) is AesKey and s == b"s" * 32 and cipher_name(r) == "aes-256-gcm"
    assert cipher_name(b"s" * 32) == "chacha20-poly1305"


def test_a_client_core_announces_aes_only_when_told():
    on = V2ClientCore(auto=True, passphrase=b"pw", aes=True, timers=Timers())
    off = V2ClientCore(auto=True, passphrase=b"pw", timers=Timers())
    assert on.session.request.features & AES
    assert not off.session.request.features & AES
    # Turning BULK off for a TUN without offloads leaves the cipher bit alone.
    on.accept_bulk(False)
    assert on.session.request.features & AES and not on.session.request.features & wire.FEATURE_BULK


def test_cipher_option(monkeypatch):
    base = ["-M", "client", "-s", "192.0.2.1", "-p", "7000", "-a", "-k", "pw"]
    assert parse_args(base).cipher == "auto"
    opts = parse_args(base + ["--cipher", "chacha20-poly1305"])
    assert opts.cipher == "chacha20-poly1305" and not wants_aes(opts)
    with pytest.raises(UsageError, match="--cipher: 'aes' is not one of auto, chacha20-poly1305"):
        parse_args(base + ["--cipher", "aes"])
    monkeypatch.setattr("camex.io.cpu.hardware_aes", lambda: True)
    assert wants_aes(parse_args(base))
    monkeypatch.setattr("camex.io.cpu.hardware_aes", lambda: False)
    assert not wants_aes(parse_args(base))


@pytest.mark.parametrize("text, expect", [
    ("processor\t: 0\nflags\t\t: fpu sse2 aes avx pclmulqdq\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx pclmulqdq\n", False),       # no AES
    ("processor\t: 0\nflags\t\t: fpu aes\n", False),                        # no CLMUL
    ("processor\t: 0\nFeatures\t: fp asimd aes pmull sha1\n", True),       # arm64
    ("processor\t: 0\nFeatures\t: half thumb fastmult vfp edsp neon\n", False),  # arm32
    ("cpu\t\t: MIPS 24Kc\n", False),
])
def test_hardware_aes_reads_cpuinfo(tmp_path, text, expect):
    f = tmp_path / "cpuinfo"
    f.write_text(text)
    assert hardware_aes(str(f)) is expect


def test_hardware_aes_without_cpuinfo(tmp_path):
    assert hardware_aes(str(tmp_path / "missing")) is False

"""Passphrase -> 32-byte Noise PSK, with scrypt (memory-hard).

Computed once per passphrase when the daemon starts or reloads, never per
packet: scrypt with N=2^14, r=8, p=1 takes 16 MiB and tens of milliseconds
on a PC (about a second on a small camera SoC). The daemon (camex.cli sets
IN_CHILD) runs it in a forked helper (camex.base.child) that hands back the
32-byte keys: a process's peak resident set never comes down, and 16 MiB
for a moment at start-up would be most of a small daemon's budget. The
keys are the same either way; all that differs is where the memory is.

Salts (fixed per deployment, public):
- a passphrase given in a `[client ID]` section (psk=) is salted with the
  lower-cased client ID, so equal per-client passphrases give unrelated
  PSKs and a guess must be paid for per client;
- the global passphrase is salted with a protocol constant: a server must be
  able to compute it before it knows who is calling (a per-ID salt for the
  global key would let anyone make the server run scrypt per datagram).

A client cannot know whether the server holds its passphrase as the global
one or in its own `[client ID]` section, so it derives both candidates
(`client_candidates`) and offers both until one is answered.

Why scrypt and not Argon2id: only recent `cryptography` releases expose
Argon2id (and only over an OpenSSL that provides it); scrypt is in every
version camex supports (>= 41), and both ends must derive the same key.
"""

from __future__ import annotations

from ..base import child
from ..base.log import LOG

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
PSK_LEN = 32
GLOBAL_SALT = b"camex v2 psk: global"
CLIENT_SALT = b"camex v2 psk: client "


def salt_for(client_id: str | None) -> bytes:
    if client_id is None:
        return GLOBAL_SALT
    return CLIENT_SALT + client_id.lower().encode("ascii")


IN_CHILD = False   # scrypt in a forked helper (the daemon; tests run threads)
CACHE_MAX = 4096   # a reload re-derives only what changed
_cache: dict = {}  # (passphrase, client_id) -> PSK


def _scrypt(pairs: list) -> list:
    # Imported here: camex.cli imports this module for every daemon, and a
    # plaintext one need not load `cryptography` for it.
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    return [Scrypt(salt=salt_for(cid), length=PSK_LEN, n=SCRYPT_N, r=SCRYPT_R,
                   p=SCRYPT_P).derive(pw) for pw, cid in pairs]


def derive_many(pairs) -> list[bytes]:
    """The PSKs of [(passphrase, client_id or None)], in order; the ones not
    derived before are derived together (one helper for all of them)."""
    pairs = [(bytes(pw), cid) for pw, cid in pairs]
    for pw, _cid in pairs:
        if not 1 <= len(pw) <= 1024:
            raise ValueError("passphrase length out of range")
    missing = [p for p in dict.fromkeys(pairs) if p not in _cache]
    if missing:
        keys = None
        if IN_CHILD:
            try:
                keys = child.run_once("kdf", _scrypt, missing)
            except child.HelperError as e:
                LOG.warning("scrypt in a helper process failed (%s); deriving here", e)
        if keys is None or len(keys) != len(missing):
            keys = _scrypt(missing)
        for pair, key in zip(missing, keys):
            if len(_cache) >= CACHE_MAX:
                del _cache[next(iter(_cache))]
            _cache[pair] = key
    return [_cache[p] for p in pairs]


def derive_psk(passphrase: bytes, client_id: str | None = None) -> bytes:
    """The PSK for a passphrase: the global one (client_id None) or the one
    of a `[client ID]` section."""
    return derive_many([(passphrase, client_id)])[0]


def client_candidates(passphrase: bytes, client_id: str | None) -> list[bytes]:
    """PSKs a client may need: its own section's key first, then the global."""
    pairs = [(passphrase, client_id)] if client_id else []
    return derive_many(pairs + [(passphrase, None)])


class KeyStore:
    """The server's keys: `psk_for(client_id)` is what V2Server calls.

    A client ID with its own passphrase gets only that key (never the global
    one); any other ID gets the global key, or None when the server has no
    global passphrase.
    """

    def __init__(self, global_passphrase: bytes | None = None,
                 client_passphrases: dict | None = None):
        sections = [(cid, pw) for cid, pw in (client_passphrases or {}).items() if pw]
        pairs = [(pw, cid) for cid, pw in sections]
        if global_passphrase:
            pairs.append((global_passphrase, None))
        keys = derive_many(pairs)  # all in one helper
        self.global_psk = keys.pop() if global_passphrase else None
        self.client_psks = {cid.lower(): key for (cid, _pw), key in zip(sections, keys)}

    def psk_for(self, client_id: str) -> bytes | None:
        return self.client_psks.get(client_id.lower(), self.global_psk)

    __call__ = psk_for


def server_keys(global_passphrase: bytes | None, config) -> KeyStore:
    """A server's KeyStore: the global passphrase and each `[client ID]`
    section's own (camex.daemon.config.ServerConfig, or None)."""
    per_client = {}
    if config is not None:
        for section in config.clients.values():
            if section.psk:
                per_client[section.id] = section.psk
    return KeyStore(global_passphrase, per_client)

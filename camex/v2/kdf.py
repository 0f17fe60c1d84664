"""Passphrase -> 32-byte Noise PSK, with scrypt (memory-hard).

Computed once per passphrase when the daemon starts or reloads, never per
packet: scrypt with N=2^14, r=8, p=1 takes 16 MiB and tens of milliseconds
on a PC (about a second on a small camera SoC).

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

import functools

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

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


@functools.lru_cache(maxsize=4096)  # a reload re-derives only what changed
def derive_psk(passphrase: bytes, client_id: str | None = None) -> bytes:
    """The PSK for a passphrase: the global one (client_id None) or the one
    of a `[client ID]` section."""
    if not 1 <= len(passphrase) <= 1024:
        raise ValueError("passphrase length out of range")
    kdf = Scrypt(salt=salt_for(client_id), length=PSK_LEN,
                 n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(bytes(passphrase))


def client_candidates(passphrase: bytes, client_id: str | None) -> list[bytes]:
    """PSKs a client may need: its own section's key first, then the global."""
    keys = []
    if client_id:
        keys.append(derive_psk(passphrase, client_id))
    keys.append(derive_psk(passphrase, None))
    return keys


class KeyStore:
    """The server's keys: `psk_for(client_id)` is what V2Server calls.

    A client ID with its own passphrase gets only that key (never the global
    one); any other ID gets the global key, or None when the server has no
    global passphrase.
    """

    def __init__(self, global_passphrase: bytes | None = None,
                 client_passphrases: dict | None = None):
        self.global_psk = derive_psk(global_passphrase) if global_passphrase else None
        self.client_psks = {
            cid.lower(): derive_psk(pw, cid)
            for cid, pw in (client_passphrases or {}).items() if pw
        }

    def psk_for(self, client_id: str) -> bytes | None:
        return self.client_psks.get(client_id.lower(), self.global_psk)

    __call__ = psk_for

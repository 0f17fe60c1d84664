"""The server's state file: what camex.tunnel.server_state snapshots, kept in
--state-dir across restarts.

One JSON file per server port, `server-<port>.json`, mode 0600, replaced
atomically (written to a temporary file beside it, fsync'ed, renamed over
the old one, directory fsync'ed): a crash leaves the old file or the new
one, never half of one.

Integrity, from the outside in:
- a BLAKE2b digest over the whole content (its last line): a truncated or
  corrupted file (a bad disk, a half-copied file, flipped bits) is refused
  whole;
- the format name and version, the host (machine-id), the port and the
  mode (encrypted or not): a file of another version, host or server is
  refused whole (its counter high-water mark is still taken if the
  checksum holds: it can only raise where counters start);
- in encrypted mode every client and replay-window entry carries an
  HMAC-SHA256 under a key derived (HKDF) from the passphrase of the key it
  names, over the entry, the host and the port: someone who can write the
  file but does not know that passphrase cannot add, move or alter an entry
  (a client on another address, an older replay window), and an entry whose
  passphrase changed or left the configuration no longer opens. Such an
  entry is ignored, the others are kept. A plaintext server authenticates
  nothing on the wire either; its entries are covered by the checksum only.
What is NOT protected: someone with write access to the state directory
(root) can delete the file or put back an older genuine one (rollback: its
replay windows are older, see docs/OPERATIONS.md), exactly as they could
stop the server.

No key or passphrase is ever written; keys are named.
"""

from __future__ import annotations

import json
import os
import socket
import time

from .. import __version__
from ..base.blake2 import blake2b, compare_digest
from ..base.log import LOG, Throttle

FORMAT = "camex-server-state"
VERSION = 1
MAC_INFO = b"camex server state file entry mac v1"
SHOW_REASONS = 4  # ignored entries named in the one summary line


def boot_clock() -> tuple:
    """(boot id, seconds since boot): the age of a file written since this
    boot, whatever the wall clock did in between (CLOCK_BOOTTIME counts
    suspend too and is never set)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = None
    return boot, time.clock_gettime(time.CLOCK_BOOTTIME)


def host_id() -> str:
    """This host: its machine-id (hostname if it has none)."""
    try:
        with open("/etc/machine-id") as f:
            mid = f.read().strip()
        if mid:
            return mid
    except OSError:
        pass
    return socket.gethostname()


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Refused(ValueError):
    """The whole file is not used; the message says why."""


class EntryMac:
    """HMAC-SHA256 of state entries under keys derived from the named keys."""

    def __init__(self, key_for, context: bytes):
        self.key_for = key_for  # key name -> 32-byte key or None
        self.context = context
        self._derived: dict = {}

    def _key(self, name):
        """A keyed HMAC context for the named key (copied per entry: keying
        one costs more than the entry's MAC), None if there is no such key.
        Kept per key, not per name: the clients of one passphrase (every
        client of the global one) share one context, ~1.5 KB of OpenSSL
        state each."""
        if type(name) is not str:      # (from a file: anything JSON holds)
            return None
        key = self.key_for(name)
        if key is None:
            return None
        h = self._derived.get(key)
        if h is None:
            # cryptography only here: a plaintext server never loads it.
            from cryptography.hazmat.primitives import hashes, hmac
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF
            mk = HKDF(hashes.SHA256(), 32, salt=None, info=MAC_INFO).derive(key)
            h = self._derived[key] = hmac.HMAC(mk, hashes.SHA256())
        return h

    def mac(self, entry: dict):
        base = self._key(entry.get("key"))
        if base is None:
            return None
        h = base.copy()
        # repr of the fields in name order: the same after a JSON round
        # trip (str, int, float, None, lists of them) and 4x cheaper than
        # a canonical JSON dump, which was most of a save's cost.
        h.update(self.context + "|".join(f"{n}={entry[n]!r}" for n in sorted(entry)
                                         if n != "mac").encode())
        return h.finalize().hex()

    def valid(self, entry: dict) -> bool:
        """The entry's MAC opens (entry names a key this server holds)."""
        want = self.mac(entry)
        got = entry.get("mac")
        return want is not None and type(got) is str and compare_digest(want, got)


def encode(snapshot: dict, *, host: str, port: int, encrypted: bool, saved_at: float,
           key_for, boot: tuple = (None, None), macs: EntryMac | None = None) -> bytes:
    """The file's bytes for a core snapshot (server_state.snapshot). `macs`:
    an EntryMac of this host, port and key_for kept from save to save (its
    derived keys are most of a MAC's cost)."""
    if macs is None:
        macs = EntryMac(key_for, f"{host}|{port}|".encode())
    state = dict(snapshot)
    if encrypted:
        state["peers"] = [dict(e, mac=macs.mac(e)) for e in snapshot.get("peers", [])]
        state["windows"] = [dict(e, mac=macs.mac(e)) for e in snapshot.get("windows", [])]
    body = {"format": FORMAT, "version": VERSION, "camex": __version__, "host": host,
            "port": port, "encrypted": encrypted, "saved_at": saved_at,
            "boot_id": boot[0], "boottime": boot[1], "state": state}
    return seal(body)


def seal(body: dict) -> bytes:
    """The file: the body as one line of JSON, then its BLAKE2b digest
    (serialised once: encoding is most of what a save costs). BLAKE2 from
    the interpreter's own _blake2 (camex.base.blake2): hashlib's SHA-256
    would load a second OpenSSL binding, ~4 MiB resident in the server."""
    text = json.dumps(body, separators=(",", ":")).encode()
    return text + b"\nblake2b:" + checksum(text) + b"\n"


def checksum(text: bytes) -> bytes:
    return blake2b(text, digest_size=32).hexdigest().encode()


def unseal(data: bytes) -> dict:
    """The body of a file whose checksum holds; Refused otherwise."""
    text, sep, tail = data.rstrip(b"\n").rpartition(b"\nblake2b:")
    if not sep:
        raise Refused("not readable (truncated or corrupt)")
    if not compare_digest(checksum(text), tail):
        raise Refused("checksum mismatch (corrupt or altered)")
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise Refused("not readable (corrupt)") from None
    if type(body) is not dict:
        raise Refused("not a camex state file")
    return body


def decode(data: bytes, *, host: str, port: int, encrypted: bool, now_wall: float,
           key_for, boot: tuple = (None, None)) -> tuple[dict, float, list]:
    """(state for server_state.restore, its age in seconds, [notes]) of a
    file's bytes; entries whose MAC does not open are left out with a note.
    Raises Refused for a file that is not used at all (after taking what
    it safely can: see `floor_of`)."""
    body = unseal(data)
    if body.get("format") != FORMAT or body.get("version") != VERSION:
        raise Refused(f"written by another version (format {body.get('format')!r} "
                      f"version {body.get('version')!r}, camex {body.get('camex')!r}); "
                      f"this one reads version {VERSION}")
    if body.get("host") != host:
        raise Refused(f"written on another host ({str(body.get('host'))[:40]!r})")
    if body.get("port") != port or body.get("encrypted") is not encrypted:
        raise Refused(f"written by another server (port {body.get('port')!r}, "
                      f"{'encrypted' if body.get('encrypted') else 'plaintext'})")
    state = body.get("state")
    saved_at = body.get("saved_at")
    if type(state) is not dict or type(saved_at) not in (int, float):
        raise Refused("not a server state")
    age = file_age(body, now_wall, boot)
    notes = []
    if encrypted:
        macs = EntryMac(key_for, f"{host}|{port}|".encode())
        for field in ("peers", "windows"):
            kept = []
            entries = state.get(field)
            if type(entries) is not list:
                if entries is not None:
                    notes.append(f"{field}: not a list")
                entries = []
            for e in entries:
                if type(e) is dict and macs.valid(e):
                    kept.append(e)
                else:
                    what = "client" if field == "peers" else "replay window"
                    who = e.get("client_id") or e.get("ip") if type(e) is dict else None
                    notes.append(f"{what} {who or ''}: its passphrase changed, its key left "
                                 "the configuration, or the entry was altered".replace("  ", " "))
            state = dict(state, **{field: kept})
    return state, age, notes


def file_age(body: dict, now_wall: float, boot: tuple) -> float:
    """Seconds since the file was saved: by the boot clock if it was saved
    since this boot (immune to wall-clock steps), else by the wall clock
    (0 if that went back: a reboot into 1970 cannot tell)."""
    if boot[0] is not None and body.get("boot_id") == boot[0] \
            and type(body.get("boottime")) in (int, float) and body["boottime"] <= boot[1]:
        return boot[1] - body["boottime"]
    return max(0.0, now_wall - body["saved_at"])


def floor_of(data: bytes):
    """The counter high-water mark of a file whose checksum holds, whatever
    its version, host or mode (it can only raise where counters start;
    SeqFloor.restore bounds it), else None."""
    try:
        state = unseal(data).get("state")
    except Refused:
        return None
    return state.get("seq_high_water") if type(state) is dict else None


class StateFile:
    """The state file of one server: atomic saves, a load at start."""

    def __init__(self, directory: str, port: int, encrypted: bool, host: str | None = None):
        self.dir = directory
        self.path = os.path.join(directory, f"server-{port}.json")
        self.port = port
        self.encrypted = encrypted
        self.host = host_id() if host is None else host
        self.throttle = Throttle(interval=60)
        self.usable = True
        self._macs: EntryMac | None = None

    def prepare(self) -> None:
        """Create the directory (0700) if it is missing; a failure is logged
        once and the server runs without a state file."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError as e:
            self.usable = False
            LOG.warning("state directory %s: %s; registered clients will not survive a "
                        "restart", self.dir, e.strerror or e)

    def read(self):
        """The file's bytes, None if there is none (a first start)."""
        try:
            with open(self.path, "rb") as f:
                return f.read(64 << 20)
        except FileNotFoundError:
            return None
        except OSError as e:
            LOG.warning("state file %s: cannot read it: %s", self.path, e.strerror or e)
            return None

    def save(self, snapshot: dict, saved_at: float, key_for) -> bool:
        if not self.usable:
            return False
        if self._macs is None or self._macs.key_for != key_for:
            self._macs = EntryMac(key_for, f"{self.host}|{self.port}|".encode())
        data = encode(snapshot, host=self.host, port=self.port, encrypted=self.encrypted,
                      saved_at=saved_at, key_for=key_for, boot=boot_clock(), macs=self._macs)
        tmp = None
        try:
            # (not tempfile: its imports - random, shutil, bz2, lzma - cost
            # the server ~1 MiB resident for one name)
            tmp = os.path.join(self.dir, f".server-{self.port}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)   # a leftover of a crashed run keeps no wider mode
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
            tmp = None
            dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            return True
        except OSError as e:
            self.throttle.warning("save", "state file %s: cannot save it: %s", self.path,
                                  e.strerror or e)
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

"""Peer daemons Debian 12 does not ship, fetched from Debian's archive.

Debian 12's wireguard-go (2022) predates wireguard-go's TUN offloads and
UDP GSO/GRO; Debian's newer suites serve builds that have them. This
module fetches the newest wireguard-go that sid or trixie serves, without
touching the system's apt configuration or installing anything:

  1. a private apt configuration in a temporary directory: its own
     sources.list (sid and trixie, `signed-by` Debian's archive keyring, so
     apt checks the suites' signatures as it does for the system's own),
     its own lists, cache and an empty dpkg status (what the host has
     installed plays no part in the choice);
  2. `apt-get update`, the candidate from `apt-cache policy` (the highest
     version of the two suites), `apt-get download` of exactly that
     version (apt checks its SHA256 against the signed index);
  3. `dpkg-deb -x` into the cache (CACHE_DIR/wireguard-go/VERSION), and
     `wireguard-go --version` from the unpacked binary proves it runs here.

state.json in CACHE_DIR/wireguard-go says what was fetched (or why not);
the bench's wireguard-go-new row reads it and, without a binary, says
"not available" with that reason. A fetch younger than MAX_AGE_DAYS is
reused without the network; a failed re-check keeps the cached binary.

    python -m bench.fetch [--refresh]      (make bench-peers)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

PACKAGE = "wireguard-go"
SUITES = ("sid", "trixie")
MIRROR = os.environ.get("CAMEX_BENCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MAX_AGE_DAYS = 14
APT_TIMEOUT = 300


def cache_dir() -> str:
    """Outside the git tree, shared by every checkout of the machine."""
    if os.environ.get("CAMEX_BENCH_CACHE"):
        return os.environ["CAMEX_BENCH_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "camex-bench")


def _pkg_dir() -> str:
    return os.path.join(cache_dir(), PACKAGE)


def _state_path() -> str:
    return os.path.join(_pkg_dir(), "state.json")


class FetchError(Exception):
    """The fetch failed; str() is one line saying why."""


# ---------------------------------------------------------------- parsing


def parse_policy(text: str) -> tuple[str, str]:
    """(candidate version, suite it comes from) out of `apt-cache policy
    PACKAGE`; FetchError when the archive has no candidate."""
    m = re.search(r"^\s*Candidate:\s*(\S+)", text, re.M)
    if not m or m.group(1) == "(none)":
        raise FetchError(f"{PACKAGE} is in none of the suites {', '.join(SUITES)}")
    version = m.group(1)
    # The version table: "     VERSION PRIO" then one line per origin,
    # "        500 URI SUITE/COMPONENT ARCH Packages".
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^\s*(\*\*\*\s+)?{re.escape(version)}\s+-?\d+\s*$", line):
            for origin in lines[i + 1:]:
                o = re.match(r"^\s+-?\d+\s+\S+\s+([^/\s]+)/\S+\s", origin)
                if o:
                    return version, o.group(1)
                if not origin.startswith("        "):
                    break
    return version, "?"


def parse_version_output(text: str) -> Optional[str]:
    """`wireguard-go --version` prints "wireguard-go v0.0.20220316" first."""
    m = re.search(r"wireguard-go\s+(v\S+)", text)
    return m.group(1) if m else None


def apt_error(output: str) -> str:
    """apt's reason for a failure in one line: its first error ("E: ..."),
    else the first failed fetch ("Err:"/"W: Failed to fetch"), else the
    last line it printed."""
    lines = [" ".join(l.split()) for l in output.splitlines() if l.strip()]
    for prefix in ("E: ", "Err:", "W: Failed to fetch", "W: GPG error", "W: "):
        for l in lines:
            if l.startswith(prefix) and "unsandboxed" not in l:
                return l[:300]
    return lines[-1][:300] if lines else "no output"


# ---------------------------------------------------------------- state


def read_state() -> dict:
    try:
        with open(_state_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_state(state: dict) -> None:
    os.makedirs(_pkg_dir(), exist_ok=True)
    tmp = _state_path() + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, _state_path())


def fetched_binary() -> tuple[str, dict]:
    """(path of the fetched wireguard-go, its state) or FetchError saying
    why there is none (the last fetch's error, or that none was tried)."""
    state = read_state()
    path = state.get("binary")
    if path and os.access(path, os.X_OK):
        return path, state
    if state.get("error"):
        raise FetchError(state["error"])
    raise FetchError(f"not fetched yet (make bench-peers fetches {PACKAGE} from Debian "
                     f"{'/'.join(SUITES)} into {_pkg_dir()})")


# ---------------------------------------------------------------- fetch


def _run(argv: list, what: str, cwd: Optional[str] = None) -> str:
    """stdout of a tool; FetchError naming ``what`` failed and apt's reason."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=APT_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise FetchError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what} took more than {APT_TIMEOUT} s") from None
    if res.returncode != 0:
        raise FetchError(f"{what}: {apt_error(res.stdout + res.stderr)}")
    return res.stdout


def _private_apt(tmp: str, mirror: str) -> list:
    """apt options that read and write only under ``tmp`` (sources, lists,
    cache, dpkg status); the system's apt.conf.d still applies (proxies)."""
    etc = os.path.join(tmp, "etc")
    for d in ("etc/sources.list.d", "etc/preferences.d", "state/lists/partial",
              "cache/archives/partial", "dl"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    with open(os.path.join(etc, "sources.list"), "w") as f:
        for suite in SUITES:
            f.write(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n")
    open(os.path.join(tmp, "status"), "w").close()
    # apt downloads as the unprivileged _apt user; let it write there
    # (else apt falls back to root and warns on every run).
    os.chmod(tmp, 0o755)
    try:
        apt_uid = pwd.getpwnam("_apt").pw_uid
        for d in ("state/lists/partial", "cache/archives/partial", "dl"):
            os.chown(os.path.join(tmp, d), apt_uid, -1)
    except (KeyError, PermissionError):
        pass
    return ["-o", f"Dir::Etc::sourcelist={etc}/sources.list",
            "-o", f"Dir::Etc::sourceparts={etc}/sources.list.d",
            "-o", f"Dir::Etc::preferences={etc}/preferences",
            "-o", f"Dir::Etc::preferencesparts={etc}/preferences.d",
            "-o", f"Dir::State={tmp}/state",
            "-o", f"Dir::State::status={tmp}/status",
            "-o", f"Dir::Cache={tmp}/cache",
            "-o", "Acquire::Languages=none",
            # Whatever the host's apt.conf.d says: an unsigned suite is an error.
            "-o", "Acquire::AllowInsecureRepositories=false",
            "-o", "Acquire::AllowDowngradeToInsecureRepositories=false"]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(mirror: str = MIRROR) -> dict:
    """Fetch and unpack the newest wireguard-go of SUITES; its state."""
    if not os.path.exists(KEYRING):
        raise FetchError(f"{KEYRING} is missing (apt install debian-archive-keyring)")
    with tempfile.TemporaryDirectory(prefix="camex-bench-apt.") as tmp:
        opts = _private_apt(tmp, mirror)
        _run(["apt-get", "-q", "--error-on=any", *opts, "update"], "apt-get update")
        version, suite = parse_policy(_run(["apt-cache", *opts, "policy", PACKAGE], "apt-cache policy"))
        dest = os.path.join(_pkg_dir(), version)
        binary = os.path.join(dest, "usr", "bin", PACKAGE)
        state = read_state()
        if state.get("debian_version") == version and os.access(binary, os.X_OK):
            state.update(checked=time.time(), suite=suite)
            state.pop("error", None)
            return state
        show = _run(["apt-cache", *opts, "show", f"{PACKAGE}={version}"], "apt-cache show")
        want = re.search(r"^SHA256:\s*(\S+)", show, re.M)
        _run(["apt-get", "-q", *opts, "download", f"{PACKAGE}={version}"], "apt-get download",
             cwd=f"{tmp}/dl")
        debs = [f for f in os.listdir(f"{tmp}/dl") if f.endswith(".deb")]
        if len(debs) != 1:
            raise FetchError(f"apt-get download left {debs or 'no .deb'}")
        deb = os.path.join(tmp, "dl", debs[0])
        sha = _sha256(deb)
        if want and want.group(1) != sha:
            raise FetchError(f"{debs[0]}: SHA256 {sha} is not the signed index's {want.group(1)}")
        os.makedirs(_pkg_dir(), exist_ok=True)
        shutil.rmtree(dest + ".tmp", ignore_errors=True)
        _run(["dpkg-deb", "-x", deb, dest + ".tmp"], "dpkg-deb -x")
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(dest + ".tmp", dest)
    out = _run([binary, "--version"], f"{binary} --version")
    return {"package": PACKAGE, "debian_version": version, "suite": suite, "mirror": mirror,
            "deb": debs[0], "sha256": sha, "binary": binary,
            "version": parse_version_output(out) or "?", "fetched": time.time(),
            "checked": time.time()}


def ensure(refresh: bool = False, mirror: str = MIRROR, log=print) -> dict:
    """Reuse a recent fetch, else fetch; one line says what happened. A
    failure never raises: it is recorded (the bench row shows it) and a
    binary fetched before stays in use."""
    state = read_state()
    have = state.get("binary") and os.access(state["binary"], os.X_OK)
    age_days = (time.time() - state.get("checked", 0)) / 86400
    if have and not refresh and age_days < MAX_AGE_DAYS:
        log(f"bench-peers: {PACKAGE} {state['debian_version']} ({state['suite']}, says "
            f"{state['version']}) cached in {os.path.dirname(os.path.dirname(os.path.dirname(state['binary'])))}")
        return state
    try:
        new = fetch(mirror)
    except FetchError as e:
        reason = f"could not fetch {PACKAGE} from Debian {'/'.join(SUITES)} ({mirror}): {e}"
        if have:
            state["last_error"] = reason
            _write_state(state)
            log(f"bench-peers: {reason}; keeping the cached {state['debian_version']}")
            return state
        state = {"package": PACKAGE, "error": reason, "checked": time.time()}
        _write_state(state)
        log(f"bench-peers: {reason} (the bench row wireguard-go-new will say not available)")
        return state
    _write_state(new)
    log(f"bench-peers: {PACKAGE} {new['debian_version']} from {new['suite']} (says "
        f"{new['version']}) in {os.path.dirname(os.path.dirname(os.path.dirname(new['binary'])))}")
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fetch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--refresh", action="store_true",
                    help=f"ask the archive again even if the cached fetch is younger than "
                         f"{MAX_AGE_DAYS} days")
    args = ap.parse_args(argv)
    ensure(refresh=args.refresh)
    # Always 0: a peer that cannot be fetched is a row that says so, not a
    # bench that does not run.
    return 0


if __name__ == "__main__":
    sys.exit(main())

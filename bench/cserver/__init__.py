"""cxserver, the C model of the deployed legacy server, for the benchmarks.

cxserver.c (beside this file) says what it models; here is what a bench
needs to run it:

    from bench import cserver
    path = cserver.build()                         # compiles once, then cached
    proc = lab.server.spawn(cserver.argv(7000, psk="secret"), name="cxserver")
    proc.wait_for_line(cserver.READY)

The binary goes to build/cserver/ at the repository's root (git-ignored)
and is rebuilt when cxserver.c or its Makefile is newer. It takes camex's
server options (-M server -p PORT [-b ADDR] [-e -k PASS] [-f FILE]), so a
bench can start either server from the same arguments.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD_DIR = ROOT / "build" / "cserver"
BINARY = BUILD_DIR / "cxserver"
SOURCES = (HERE / "cxserver.c", HERE / "Makefile")
# What the build needs, as Debian packages (mk/bench.mk installs them).
APT = ("gcc", "make", "libssl-dev", "libsodium-dev")
HEADERS = ("/usr/include/openssl/evp.h", "/usr/include/sodium.h")
READY = r"listening on"


class BuildError(RuntimeError):
    """cxserver cannot be built here (one line saying what is missing)."""


def _missing() -> list[str]:
    missing = [tool for tool in ("gcc", "make") if shutil.which(tool) is None]
    if not os.path.exists(HEADERS[0]):
        missing.append("libssl-dev")
    if not os.path.exists(HEADERS[1]):
        missing.append("libsodium-dev")
    return missing


def _stale(binary: Path) -> bool:
    if not binary.exists():
        return True
    built = binary.stat().st_mtime
    return any(src.stat().st_mtime > built for src in SOURCES)


def build(out_dir: Optional[os.PathLike] = None) -> str:
    """Compile cxserver if it is missing or older than its source; return
    the binary's path. ``out_dir``: build there instead (tests)."""
    out = Path(out_dir) if out_dir is not None else BUILD_DIR
    binary = out / "cxserver"
    if not _stale(binary):
        return str(binary)
    missing = _missing()
    if missing:
        raise BuildError(f"cxserver needs {', '.join(missing)}: "
                         f"sh scripts/install-deps.sh {' '.join(APT)} (or make bench-deps)")
    res = subprocess.run(["make", "-s", "-C", str(HERE), f"OUT={out}"],
                         capture_output=True, text=True)
    if res.returncode != 0 or not binary.exists():
        raise BuildError(f"cxserver failed to build:\n{res.stdout}{res.stderr}")
    return str(binary)


def argv(port: int, psk: Optional[str] = None, config: Optional[str] = None,
         bind: Optional[str] = None, log_level: Optional[str] = None,
         socket_buffer: Optional[int] = None, binary: Optional[str] = None) -> list[str]:
    """The command line of a cxserver: encrypted when ``psk`` is given.
    ``log_level="warning"`` leaves out its line per relayed packet (the
    deployed server writes one: flaw 8), keeping one per dropped datagram.
    ``socket_buffer``: SO_RCVBUF/SO_SNDBUF in bytes (camex's server asks for
    4 MiB; without it the kernel's default, ~208 KiB)."""
    cmd = [binary or build(), "-M", "server", "-p", str(port)]
    if bind:
        cmd += ["-b", bind]
    if psk:
        cmd += ["-e", "-k", psk]
    if config:
        cmd += ["-f", config]
    if log_level:
        cmd += ["--log-level", log_level]
    if socket_buffer:
        cmd += ["--socket-buffer", str(socket_buffer)]
    return cmd

"""Boot a kernel with virtme-ng and run one command inside it.

virtme-ng boots the unpacked vmlinuz under QEMU (TCG: no KVM here) with the
host's root filesystem shared read-only, so the guest sees /work/main, the
venv and the host's tools.  Results come back through one writable shared
directory (--rwdir); the console is only kept as a log.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from .kernels import CACHE, KernelTree

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


@dataclasses.dataclass
class BootResult:
    returncode: int
    console: str
    seconds: float
    timed_out: bool = False


def vng_path() -> str:
    path = VENV_BIN / "vng"
    if path.exists():
        return str(path)
    found = shutil.which("vng")
    if not found:
        raise FileNotFoundError("virtme-ng (vng) not installed: make venv")
    return found


def boot(tree: KernelTree, command: str, rwdir: Path, *, memory: str = "1G",
         cpus: int = 2, timeout: float = 900) -> BootResult:
    """Boot `tree`, run `command` as root in the guest, return when it exits."""
    rwdir.mkdir(parents=True, exist_ok=True)
    cmd = [vng_path(), "--run", str(tree.vmlinuz), "--disable-kvm",
           "--memory", memory, "--cpus", str(cpus),
           "--rwdir", str(rwdir), "--verbose",
           "--exec", command]
    env = dict(os.environ)
    # vng execs virtme-run by name: the venv's bin must be on PATH.
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    # A Rust virtiofsd (see chroot.py) shares the root filesystem with
    # virtio-fs instead of 9p: Python start-up in the guest is several
    # times faster with it under TCG.
    fsd = virtiofsd_dir()
    if fsd:
        env["PATH"] = f"{fsd}:{env['PATH']}"
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        return BootResult(-1, out, time.monotonic() - start, timed_out=True)
    seconds = time.monotonic() - start
    (rwdir / "console.log").write_text(proc.stdout + proc.stderr)
    return BootResult(proc.returncode, proc.stdout + proc.stderr, seconds)


def virtiofsd_dir() -> str | None:
    path = CACHE / "bin" / "virtiofsd"
    return str(path.parent) if path.exists() else None


def guest_command(script: Path, *args: str | Path) -> str:
    return " ".join(shlex.quote(str(a)) for a in ("sh", script, *args))

"""A Debian trixie build chroot under lab/vm/cache/chroot/, made by debootstrap.

Two things the bookworm host cannot do on its own need it:

* Kernels from trixie-backports (7.x) ship kbuild helpers linked against
  trixie's glibc and were built with gcc-14; camex.ko is built for them
  inside the chroot, with the kernel cache bind-mounted at the same path so
  the unpacked headers' absolute paths stay valid.
* trixie's Rust virtiofsd (bookworm only has QEMU's old C one, which
  virtme-ng refuses) lets virtme-ng share the root filesystem over
  virtio-fs instead of 9p; Python start-up in a TCG guest is 2-3x faster.
  It runs on the host through the chroot's own dynamic loader (wrapper in
  cache/bin/virtiofsd, which vm.py puts on PATH).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .kernels import CACHE

MIRROR = "http://deb.debian.org/debian"
# The compiler is added per kernel (build.py), virtiofsd by install_virtiofsd.
PACKAGES = ("make", "libc6-dev", "dwarves", "bc")


def ensure(suite: str = "trixie") -> Path:
    """The chroot of `suite`, created once (debootstrap, ~2 min)."""
    root = CACHE / "chroot" / suite
    if (root / ".camex-ready").exists():
        return root
    if shutil.which("debootstrap") is None:
        raise FileNotFoundError("debootstrap is not installed (make vm-deps)")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                    suite, str(root), MIRROR], check=True,
                   stdout=subprocess.DEVNULL)
    (root / ".camex-ready").touch()
    return root


def ensure_packages(suite: str, packages: list[str]) -> None:
    """apt-get install `packages` in the chroot unless already there."""
    root = ensure(suite)
    missing = [p for p in packages
               if run(suite, ["dpkg-query", "-W", "-f=${Status}", p]).stdout
               .find("ok installed") < 0]
    if missing:
        # A fast-moving suite's Release can be past its Valid-Until on a
        # mirror that lags; the packages are still signed and verified.
        apt = ["apt-get", "-o", "Acquire::Check-Valid-Until=false"]
        for argv in ([*apt, "update", "-qq"],
                     [*apt, "install", "-y", "-qq", "--no-install-recommends", *missing]):
            res = run(suite, argv)
            if res.returncode != 0:
                raise RuntimeError(f"chroot {root}: {' '.join(argv)}: {res.stderr[-500:]}")


def install_virtiofsd(suite: str = "trixie") -> Path:
    """Write cache/bin/virtiofsd, running the chroot's virtiofsd on the host."""
    wrapper = CACHE / "bin" / "virtiofsd"
    if wrapper.exists():
        return wrapper
    root = ensure(suite)
    ensure_packages(suite, ["virtiofsd"])
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    libs = f"{root}/lib/x86_64-linux-gnu:{root}/usr/lib/x86_64-linux-gnu"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# trixie's Rust virtiofsd, run with trixie's loader and libraries\n"
        f'exec {root}/lib64/ld-linux-x86-64.so.2 --library-path {libs} '
        f'{root}/usr/libexec/virtiofsd "$@"\n')
    wrapper.chmod(0o755)
    if subprocess.run([str(wrapper), "--version"], capture_output=True).returncode != 0:
        wrapper.unlink()
        raise RuntimeError("virtiofsd from the chroot does not run on this host")
    return wrapper


@contextlib.contextmanager
def mounted(root: Path, extra: dict[str, str] | None = None):
    """Bind /proc, /dev and the lab cache into the chroot (same paths),
    and each host directory of `extra` at its path (value) in the chroot."""
    targets = []
    binds = [(src, src) for src in ("/proc", "/dev", str(CACHE))]
    binds += list((extra or {}).items())
    try:
        for src, inside in binds:
            dst = Path(str(root) + inside)
            dst.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", src, str(dst)], check=True)
            targets.append(dst)
        yield
    finally:
        for dst in reversed(targets):
            subprocess.run(["umount", "-l", str(dst)])


def run(suite: str, argv: list[str]) -> subprocess.CompletedProcess:
    root = ensure(suite)
    with mounted(root):
        return run_in(root, argv)


CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def run_in(root: Path, argv: list[str], env: dict[str, str] | None = None,
           timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run argv in the chroot at `root` (already mounted)."""
    return subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                          env={**CHROOT_ENV, **(env or {})}, timeout=timeout)


@contextlib.contextmanager
def scratch(suite: str = "trixie", extra: dict[str, str] | None = None):
    """A throwaway writable copy of the chroot of `suite`, mounted.

    An overlayfs over the cached chroot: whatever is installed or changed
    in it (the Debian package tests install and purge camex there) lands in
    a temporary upper directory that is dropped on exit, so the VM lab's
    chroot stays as it was and no second debootstrap is needed.
    """
    lower = ensure(suite)
    base = CACHE / "scratch"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{suite}-{os.getpid()}-", dir=base))
    upper, work, root = tmp / "upper", tmp / "work", tmp / "root"
    for d in (upper, work, root):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(root)],
                   check=True)
    try:
        with mounted(root, extra):
            yield root
    finally:
        subprocess.run(["umount", "-l", str(root)])
        # --one-file-system: never into a bind mount that is still live.
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)])


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("debootstrap") is not None

"""Build camex.ko out of tree against one unpacked kernel tree.

The sources are copied into lab/vm/cache/build/<release>/ so that builds for
several kernels never share object files with each other or with kmod/.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from .kernels import CACHE, KernelTree, debian_cc

KMOD_SRC = Path(__file__).resolve().parents[2] / "kmod"
SOURCES = ("camex-k.c", "Kbuild")


@dataclasses.dataclass
class BuildResult:
    release: str
    ko: Path | None
    log: str
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return self.ko is not None and self.ko.exists()

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAIL"
        return f"{len(self.warnings)} warn" if self.warnings else "ok"


def build(tree: KernelTree, cc: str | None = None, arch: str | None = None,
          cross_compile: str | None = None, outdir: Path | None = None,
          chroot_suite: str | None = None) -> BuildResult:
    """Build with W=1; `cc` overrides the compiler Debian used.

    With `chroot_suite` the build runs in that Debian chroot (chroot.py)
    with the kernel's own compiler, as its headers' Makefile names it.
    """
    out = outdir or CACHE / "build" / tree.release
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in SOURCES:
        shutil.copy2(KMOD_SRC / name, out / name)
    cmd = ["make", "-C", str(tree.kdir), f"M={out}", "W=1",
           f"-j{os.cpu_count() or 1}", "modules"]
    want = None if chroot_suite else (cc or debian_cc(tree))
    if want and shutil.which((cross_compile or "") + want) is None:
        want = "gcc"   # e.g. gcc-10 for bullseye's 5.10 is not in bookworm
    if want:
        cmd.append(f"CC={(cross_compile or '') + want if cross_compile else want}")
    if arch:
        cmd.append(f"ARCH={arch}")
    if cross_compile:
        cmd.append(f"CROSS_COMPILE={cross_compile}")
    if chroot_suite:
        from . import chroot
        # The kernel's own compiler (gcc-14 for trixie, newer for sid).
        chroot.ensure_packages(chroot_suite, [debian_cc(tree) or "gcc"])
        proc = chroot.run(chroot_suite, cmd)
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(" ".join(cmd) + "\n" + log)
    warnings = [line for line in log.splitlines()
                if "warning:" in line and "BTF" not in line]
    ko = out / "camex.ko"
    return BuildResult(tree.release, ko if proc.returncode == 0 and ko.exists() else None,
                       log, warnings)

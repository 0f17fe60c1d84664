"""The cross build of `make kmatrix`: camex.ko for arm64 on this x86 host.

The prepared tree is Debian's own: the arm64 flavour's linux-headers
(config, generated headers, Module.symvers) and the arch-independent common
headers of the same kernel, with the amd64 build of linux-kbuild (the same
kbuild helpers, compiled to run on this host) in place of the arm64 one.
The compiler is Debian's cross gcc (gcc-12-aarch64-linux-gnu), the same
major version Debian built the arm64 kernel with.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

from . import build as kbuild
from .kernels import BOOKWORM, CACHE, KernelTree, PrivateApt

CROSS_COMPILE = "aarch64-linux-gnu-"
CROSS_CC = "gcc-12"


@dataclasses.dataclass
class CrossResult:
    label: str
    release: str
    status: str
    ok: bool
    detail: str = ""


def prepare_arm64() -> KernelTree:
    apt = PrivateApt(BOOKWORM, archs=("amd64", "arm64"))
    apt.update()
    headers = [d for d in apt.depends("linux-headers-arm64:arm64")
               if d.startswith("linux-headers-")][0]
    release = headers.split(":")[0][len("linux-headers-"):]
    base = CACHE / "kernels" / f"{release}-cross"
    tree = KernelTree("6.1-arm64", release, apt.version(f"linux-headers-{release}:arm64"),
                      base / "root")
    if (base / "unpacked").exists():
        return tree
    shutil.rmtree(base, ignore_errors=True)
    deps = apt.depends(f"linux-headers-{release}:arm64")
    common = [d.split(":")[0] for d in deps if d.startswith("linux-headers-")]
    kbuild_pkg = [d.split(":")[0] + ":amd64" for d in deps if d.startswith("linux-kbuild-")]
    debs = apt.download([f"linux-headers-{release}:arm64", *common, *kbuild_pkg],
                        base / "debs")
    for deb in debs:
        subprocess.run(["dpkg", "-x", str(deb), str(tree.root)], check=True)
    # Point the flavour Makefile at the unpacked common tree (no image here).
    mk = tree.kdir / "Makefile"
    mk.write_text(mk.read_text().replace(" /usr/src/", f" {tree.root}/usr/src/"))
    shutil.rmtree(base / "debs")
    (base / "unpacked").touch()
    return tree


def build_arm64() -> CrossResult:
    label = "6.1 arm64 (cross)"
    if shutil.which(CROSS_COMPILE + CROSS_CC) is None:
        return CrossResult(label, "-", f"FAIL (no {CROSS_COMPILE}{CROSS_CC})", False)
    try:
        tree = prepare_arm64()
    except (subprocess.CalledProcessError, LookupError, IndexError) as exc:
        return CrossResult(label, "-", f"FAIL (prepare: {exc})", False)
    res = kbuild.build(tree, cc=CROSS_CC, arch="arm64", cross_compile=CROSS_COMPILE,
                       outdir=CACHE / "build" / f"{tree.release}-cross")
    if not res.ok:
        return CrossResult(label, tree.release, "FAIL", False, res.log[-2000:])
    kind = subprocess.run(["file", "-b", str(res.ko)], capture_output=True,
                          text=True).stdout.strip()
    ok = "aarch64" in kind and not res.warnings
    return CrossResult(label, tree.release, f"{res.status}, {kind.split(',')[1].strip()}",
                       ok, kind)

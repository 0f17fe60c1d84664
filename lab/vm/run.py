"""One VM lab run: fetch a kernel, build camex.ko for it, boot it once and
run a whole guest suite in that one boot, then read the results back."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from . import build as kbuild
from . import kernels, vm

GUEST_SH = Path(__file__).resolve().parent / "guest.sh"


@dataclasses.dataclass
class CaseResult:
    name: str          # "vmcase_contract.py::test_x"
    outcome: str       # passed | failed | error | skipped
    message: str = ""


@dataclasses.dataclass
class LabRun:
    kernel: str
    release: str = ""
    build: kbuild.BuildResult | None = None
    boot: vm.BootResult | None = None
    cases: dict[str, CaseResult] = dataclasses.field(default_factory=dict)
    outdir: Path | None = None
    error: str = ""

    @property
    def passed(self) -> int:
        return sum(c.outcome == "passed" for c in self.cases.values())

    @property
    def guest_uptime(self) -> float | None:
        try:
            return float((self.outdir / "uptime").read_text())
        except (OSError, ValueError, TypeError):
            return None

    def file(self, name: str) -> str:
        try:
            return (self.outdir / name).read_text(errors="replace")
        except (OSError, TypeError):
            return ""


def parse_junit(path: Path) -> dict[str, CaseResult]:
    results: dict[str, CaseResult] = {}
    if not path.exists():
        return results
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = f"{module}.py::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (el.get("message") or "") + "\n" + (el.text or "")
                break
        results[name] = CaseResult(name, outcome, message.strip())
    return results


def _want_virtiofsd() -> None:
    """Set up virtio-fs sharing if we can; 9p (slower) otherwise."""
    from . import chroot
    if chroot.available():
        try:
            chroot.install_virtiofsd()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"lab.vm: no virtiofsd ({exc}); sharing the root over 9p")


def run(kernel: str, suite: str = "contract", extra: list[str] | None = None,
        timeout: float = 900, ko: Path | None = None, tag: str = "") -> LabRun:
    """Fetch, build and boot `kernel` (a KERNELS key), run `suite` in it.

    With `ko`, that module (built elsewhere, e.g. by DKMS from the Debian
    package) is tested instead of one built here; `tag` keeps its results
    apart from the lab's own run of the same kernel and suite.
    """
    lab = LabRun(kernel)
    tree = kernels.fetch(kernel)
    lab.release = tree.release
    spec = kernels.KERNELS[kernel]
    if ko is None:
        lab.build = kbuild.build(tree, cc=spec.cc, chroot_suite=spec.chroot)
    else:
        lab.build = kbuild.BuildResult(tree.release, ko if ko.exists() else None,
                                       f"prebuilt {ko}", [])
    if not lab.build.ok:
        lab.error = "build failed"
        return lab
    outdir = kernels.CACHE / "runs" / f"{tree.release}-{suite}{tag}"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    lab.outdir = outdir
    _want_virtiofsd()
    cmd = vm.guest_command(GUEST_SH, outdir, lab.build.ko, suite, *(extra or []))
    lab.boot = vm.boot(tree, cmd, outdir, timeout=timeout)
    lab.cases = parse_junit(outdir / "junit.xml")
    if lab.boot.timed_out:
        lab.error = f"VM timed out after {timeout:.0f} s"
    elif not (outdir / "rc").exists():
        lab.error = "guest script did not finish (see console.log)"
    return lab

"""camex-dkms: DKMS builds camex.ko from the package against the VM lab's
kernels (6.1 and 6.12, fetched by lab.vm.kernels, never named by ABI here),
and the module it builds passes the guest tests in a VM of that kernel.

The host's dkms (bookworm's, the same tool `apt install camex-dkms` runs)
works on the package's /usr/src tree unpacked under the lab cache, with its
own --dkmstree and --sourcetree there: nothing is registered on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.vm import kernels, run as vmrun
from lab.vm.kernels import CACHE
from tests.lab.test_vm_kmod import SUITE_FILES, guest_cases
from tests.packaging.conftest import version

pytestmark = [pytest.mark.lab, pytest.mark.vm]

KERNELS = [k for k in os.environ.get("CAMEX_VM_KERNELS",
                                     ",".join(kernels.TEST_KERNELS)).split(",") if k]
# The guest suite on the DKMS-built module: the contract of the device and
# a round trip, one boot per kernel (the daemon end to end over camex.ko
# runs in test-vm on the lab's own build of the same source).
SUITE = "contract"
DKMS_DIR = CACHE / "dkms"


@pytest.fixture(scope="module")
def unpacked(debs):
    """camex-dkms unpacked as dpkg would, and a private dkms tree."""
    shutil.rmtree(DKMS_DIR, ignore_errors=True)
    DKMS_DIR.mkdir(parents=True)
    root = DKMS_DIR / "root"
    subprocess.run(["dpkg-deb", "-x", str(debs["camex-dkms"]), str(root)], check=True)
    tree = DKMS_DIR / "tree"
    tree.mkdir()
    opts = ["--sourcetree", str(root / "usr/src"), "--dkmstree", str(tree)]
    proc = subprocess.run(["dkms", "add", "-m", "camex", "-v", version(), *opts],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return opts


_builds: dict[str, tuple[subprocess.CompletedProcess, kernels.KernelTree]] = {}


@pytest.fixture(scope="module")
def dkms_build(unpacked):
    def get(kernel: str):
        if kernel not in _builds:
            tree = kernels.fetch(kernel)
            proc = subprocess.run(
                ["dkms", "build", "-m", "camex", "-v", version(), "-k", tree.release,
                 "-a", "x86_64", "--kernelsourcedir", str(tree.kdir), *unpacked],
                capture_output=True, text=True)
            _builds[kernel] = (proc, tree)
        return _builds[kernel]
    return get


def built_ko(tree: kernels.KernelTree) -> Path:
    return (DKMS_DIR / "tree" / "camex" / version() / tree.release / "x86_64" / "module"
            / "camex.ko")


@pytest.mark.parametrize("kernel", KERNELS)
def test_dkms_builds_the_module_for_the_kernel(kernel, dkms_build):
    proc, tree = dkms_build(kernel)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ko = built_ko(tree)
    assert ko.exists()
    vermagic = subprocess.run(["modinfo", "-F", "vermagic", str(ko)], check=True,
                              capture_output=True, text=True).stdout.split()[0]
    assert vermagic == tree.release
    log = (ko.parents[1] / "log" / "make.log").read_text()
    assert [line for line in log.splitlines() if "warning:" in line] == []


@pytest.mark.parametrize("kernel", KERNELS)
def test_dkms_module_passes_the_guest_suite(kernel, dkms_build):
    proc, tree = dkms_build(kernel)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    lab = vmrun.run(kernel, SUITE, ko=built_ko(tree), tag="-dkms")
    assert not lab.error, f"{lab.error}\n{lab.file('console.log')[-3000:]}"
    assert lab.file("uname").strip() == tree.release
    assert sorted(lab.cases) == sorted(guest_cases(SUITE_FILES[SUITE])), \
        lab.file("pytest.log")[-3000:]
    failed = {name: case.message[:800] for name, case in lab.cases.items()
              if case.outcome != "passed"}
    assert failed == {}

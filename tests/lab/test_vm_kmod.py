"""camex.ko on real Debian kernels, in virtme-ng guests (TCG).

For each kernel of `make test` (6.1 and 6.12; override with
CAMEX_VM_KERNELS=5.10,6.1,...) the module is built with W=1 and ONE boot runs
the whole guest suite (tests/lab/guest/vmcase_*.py); every guest case is then
reported here as its own host-side test, so a failure names the kernel and
the behaviour that broke.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from lab.vm import kernels, run as vmrun

pytestmark = [pytest.mark.lab, pytest.mark.vm]

GUEST = Path(__file__).resolve().parent / "guest"
# One boot per kernel. The end-to-end case (three daemons, ~100 s under TCG)
# runs on 6.12 only in `make test` to keep it within its time budget;
# `make kmatrix` runs every suite on every kernel.
DEFAULT_SUITES = {"6.12": "all"}
SUITE_OVERRIDE = os.environ.get("CAMEX_VM_SUITE")
SUITE_FILES = {
    "contract": ["vmcase_contract.py", "vmcase_roundtrip.py", "vmcase_zz_dmesg.py"],
    "e2e": ["vmcase_e2e.py", "vmcase_zz_dmesg.py"],
    "all": ["vmcase_contract.py", "vmcase_roundtrip.py", "vmcase_e2e.py",
            "vmcase_zz_dmesg.py"],
}
KERNELS = [k for k in os.environ.get("CAMEX_VM_KERNELS",
                                     ",".join(kernels.TEST_KERNELS)).split(",") if k]


def guest_cases(files: list[str]) -> list[str]:
    """The test functions the guest will run, read from the sources."""
    cases = []
    for name in files:
        tree = ast.parse((GUEST / name).read_text())
        cases += [f"{name}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    return cases


def suite_of(kernel: str) -> str:
    return SUITE_OVERRIDE or DEFAULT_SUITES.get(kernel, "contract")


PLAN = [(k, case) for k in KERNELS for case in guest_cases(SUITE_FILES[suite_of(k)])]
_runs: dict[str, vmrun.LabRun] = {}


@pytest.fixture(scope="session")
def lab_run():
    """kernel -> LabRun; the first request boots, later ones reuse it."""
    def get(kernel: str) -> vmrun.LabRun:
        if kernel not in _runs:
            _runs[kernel] = vmrun.run(kernel, suite_of(kernel))
        return _runs[kernel]
    return get


@pytest.mark.parametrize("kernel", KERNELS)
def test_module_builds_without_warnings(kernel, lab_run):
    lab = lab_run(kernel)
    assert lab.build is not None and lab.build.ok, lab.build.log[-4000:] if lab.build else lab.error
    assert lab.build.warnings == []


@pytest.mark.parametrize("kernel", KERNELS)
def test_guest_suite_ran_to_the_end(kernel, lab_run):
    lab = lab_run(kernel)
    assert not lab.error, f"{lab.error}\n{lab.file('console.log')[-3000:]}"
    assert lab.file("uname").strip() == lab.release     # booted the right kernel
    expected = sorted(case for k, case in PLAN if k == kernel)
    assert sorted(lab.cases) == expected, lab.file("pytest.log")[-3000:]


@pytest.mark.parametrize("kernel,case", PLAN)
def test_in_guest(kernel, case, lab_run):
    lab = lab_run(kernel)
    result = lab.cases.get(case)
    assert result is not None, (f"{case} did not run in the {kernel} guest: {lab.error}\n"
                                + lab.file("pytest.log")[-3000:])
    assert result.outcome == "passed", result.message

"""`make kmatrix`: every kernel of the matrix in turn (one boot each), plus a
cross build for arm64, then one table: kernel, build, tests passed, boot time.
"""

from __future__ import annotations

import sys
import time

from . import cross, kernels, run


def _row(lab: run.LabRun, wall: float) -> list[str]:
    build = lab.build.status if lab.build else "-"
    tests = f"{lab.passed}/{len(lab.cases)}" if lab.cases else "-"
    if lab.error:
        tests += f" ({lab.error})"
    boot = f"{lab.guest_uptime:.1f} s" if lab.guest_uptime else "-"
    return [lab.kernel, lab.release or "-", build, tests, boot, f"{wall:.0f} s"]


def table(rows: list[list[str]]) -> str:
    head = ["kernel", "release", "build (W=1)", "tests passed", "boot", "VM total"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def main(names: list[str], suite: str = "all", cross_build: bool = True) -> int:
    rows, failed = [], False
    for name in names:
        start = time.monotonic()
        try:
            lab = run.run(name, suite)
        except Exception as exc:     # one broken kernel must not hide the rest
            lab = run.LabRun(name, error=f"{type(exc).__name__}: {exc}")
        wall = time.monotonic() - start
        rows.append(_row(lab, wall))
        ok = lab.build and lab.build.ok and not lab.build.warnings and not lab.error \
            and lab.cases and lab.passed == len(lab.cases)
        failed |= not ok
        print(f"kmatrix: {name}: {' | '.join(rows[-1][1:])}", flush=True)
    if cross_build:
        start = time.monotonic()
        res = cross.build_arm64()
        rows.append([res.label, res.release, res.status, "- (not booted)", "-",
                     f"{time.monotonic() - start:.0f} s"])
        failed |= not res.ok
    print()
    print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(kernels.KERNELS)))

"""Command line of the VM lab.

    python -m lab.vm fetch 6.1          unpack kernel 6.1, print its KDIR
    python -m lab.vm build 6.12         build camex.ko for it (W=1)
    python -m lab.vm test 6.1 [--suite contract|e2e|all]
    python -m lab.vm matrix [KERNEL...] every kernel of the matrix + cross build
    python -m lab.vm bench [KERNEL]     iperf3 via /dev/camex vs tun.ko
"""

from __future__ import annotations

import argparse
import sys

from . import build as kbuild
from . import kernels, run


def cmd_fetch(args) -> int:
    tree = kernels.fetch(args.kernel, refresh=args.refresh)
    print(tree.kdir)
    return 0


def cmd_build(args) -> int:
    tree = kernels.fetch(args.kernel)
    spec = kernels.KERNELS[args.kernel]
    res = kbuild.build(tree, cc=spec.cc, chroot_suite=spec.chroot)
    sys.stdout.write("\n".join(res.warnings) + ("\n" if res.warnings else ""))
    print(f"{tree.release}: {res.status} {res.ko or ''}")
    return 0 if res.ok and not res.warnings else 1


def report(lab: run.LabRun) -> str:
    lines = [f"== {lab.kernel} ({lab.release}): build {lab.build.status if lab.build else '-'}, "
             f"{lab.passed}/{len(lab.cases)} guest tests passed"
             + (f", {lab.error}" if lab.error else "")]
    for case in lab.cases.values():
        if case.outcome != "passed":
            lines.append(f"   {case.outcome.upper()} {case.name}\n      "
                         + case.message[:800].replace("\n", "\n      "))
    return "\n".join(lines)


def cmd_test(args) -> int:
    lab = run.run(args.kernel, args.suite)
    print(report(lab))
    ok = lab.build and lab.build.ok and not lab.error and lab.cases and \
        lab.passed == len(lab.cases)
    return 0 if ok else 1


def cmd_matrix(args) -> int:
    from . import matrix
    return matrix.main(args.kernels or list(kernels.KERNELS), suite=args.suite,
                       cross_build=not args.no_cross)


def cmd_bench(args) -> int:
    from . import bench
    return bench.main(args.kernel, seconds=args.seconds, rounds=args.rounds,
                      queue_len=args.queue_len)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.vm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    names = list(kernels.KERNELS)
    s = sub.add_parser("fetch")
    s.add_argument("kernel", choices=names)
    s.add_argument("--refresh", action="store_true", help="re-resolve the newest package")
    s.set_defaults(fn=cmd_fetch)
    s = sub.add_parser("build")
    s.add_argument("kernel", choices=names)
    s.set_defaults(fn=cmd_build)
    s = sub.add_parser("test")
    s.add_argument("kernel", choices=names)
    s.add_argument("--suite", default="contract", choices=["contract", "e2e", "all"])
    s.set_defaults(fn=cmd_test)
    s = sub.add_parser("matrix")
    s.add_argument("kernels", nargs="*", choices=names + [[]], default=[])
    s.add_argument("--suite", default="all", choices=["contract", "e2e", "all"])
    s.add_argument("--no-cross", action="store_true")
    s.set_defaults(fn=cmd_matrix)
    s = sub.add_parser("bench")
    s.add_argument("kernel", nargs="?", default="6.12", choices=names)
    s.add_argument("--seconds", type=int, default=10)
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--queue-len", type=int, default=None,
                   help="camex.ko queue_len for the run (default: the module's)")
    s.set_defaults(fn=cmd_bench)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

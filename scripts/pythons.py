"""Test camex under every CPython that pyproject.toml claims (`make test-pythons`).

The claim is the "Programming Language :: Python :: 3.N" classifiers, which
must start at requires-python's lower bound. For each claimed version this
finds an interpreter on the machine (pyenv's versions, then python3.N on
PATH), keeps a venv for it under .venvs/py3.N with camex and its test extra
installed (rebuilt when the interpreter or pyproject.toml changes), and runs
the unit tier and one namespace smoke test (a server and two clients, ping
through the tunnel, daemons started by that venv's `camex`). It ends with a
table of what ran and what it could not find.

A claimed version the machine lacks fails the run, as a failing test would:
a claim nobody tested is not proven. Name fewer versions to test fewer:
    python3 scripts/pythons.py 3.9 3.13     (make test-pythons PYTHONS="3.9 3.13")

Written for any Python 3 on the machine (the host's, or the venv's) and for
a root shell in the repository, as `make test` runs it.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENVS = os.path.join(REPO, ".venvs")
PYPROJECT = os.path.join(REPO, "pyproject.toml")
# Short, and what every user does first: a server and clients with a
# passphrase on the default command line, ping through the tunnel, status.
SMOKE = "tests/integration/test_v2_tunnel.py::test_a_passphrase_alone_means_v2"
# The unit tier is about one CPU-minute: two workers, as in `make check`.
UNIT = ["-q", "-n", "2", "-p", "no:cacheprovider", "tests/unit"]


def claimed_versions(text: str) -> list:
    """(3, N) of each classifier, checked against requires-python."""
    found = sorted({(3, int(n)) for n in
                    re.findall(r'"Programming Language :: Python :: 3\.(\d+)"', text)})
    low = re.search(r'requires-python\s*=\s*">=\s*3\.(\d+)"', text)
    if not found or not low:
        sys.exit("pythons: pyproject.toml needs requires-python = \">=3.N\" and "
                 "'Programming Language :: Python :: 3.N' classifiers")
    if found[0] != (3, int(low.group(1))):
        sys.exit(f"pythons: requires-python starts at 3.{low.group(1)} but the classifiers "
                 f"start at 3.{found[0][1]}: make them say the same")
    missing = [v for v in range(found[0][1], found[-1][1] + 1) if (3, v) not in found]
    if missing:
        sys.exit(f"pythons: the classifiers skip 3.{missing[0]}")
    return found


def probe(exe: str):
    """(major, minor, micro) of a working CPython at exe that can make a
    venv, else None (a pyenv shim for a version that is not selected exits
    with an error; Debian's python3.N lacks ensurepip without python3-venv)."""
    try:
        out = subprocess.run(
            [exe, "-c", "import ensurepip, platform, sys, venv; "
                        "print(platform.python_implementation(), *sys.version_info[:3])"],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 4 or fields[0] != "CPython":
        return None
    return tuple(int(f) for f in fields[1:])


def candidates(version):
    """Interpreters that may be CPython major.minor, best first: pyenv's
    builds (newest patch release first), then python3.N on PATH."""
    major, minor = version
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    builds = []
    for d in glob.glob(os.path.join(root, "versions", f"{major}.{minor}.*")):
        m = re.fullmatch(rf"{major}\.{minor}\.(\d+)", os.path.basename(d))
        if m:  # plain releases only: not 3.9.18-debug, not 3.13.0t
            builds.append((int(m.group(1)), os.path.join(d, "bin", f"python{major}.{minor}")))
    for _, exe in sorted(builds, reverse=True):
        yield exe
    on_path = shutil.which(f"python{major}.{minor}")
    if on_path:
        yield on_path


def find(version):
    for exe in candidates(version):
        got = probe(exe)
        if got and got[:2] == version:
            return exe, got
    return None


def ensure_venv(version, exe, full):
    """.venvs/py3.N with camex[test]; the stamp says what built it."""
    venv = os.path.join(VENVS, f"py{version[0]}.{version[1]}")
    py = os.path.join(venv, "bin", "python")
    with open(PYPROJECT, "rb") as f:
        want = {"python": os.path.realpath(exe), "version": ".".join(map(str, full)),
                "pyproject": hashlib.sha256(f.read()).hexdigest()}
    stamp = os.path.join(venv, ".camex-stamp")
    try:
        with open(stamp) as f:
            have = json.load(f)
    except (OSError, ValueError):
        have = {}
    if have == want and os.path.exists(py):
        return py, "cached"
    how = "reinstalled"  # pyproject.toml changed
    if {k: have.get(k) for k in ("python", "version")} != {k: want[k] for k in ("python", "version")}:
        shutil.rmtree(venv, ignore_errors=True)  # another interpreter: start afresh
        subprocess.run([exe, "-m", "venv", venv], check=True)
        how = "new"
    subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "-e", f"{REPO}[test]"], check=True)
    with open(stamp, "w") as f:
        json.dump(want, f)
    return py, how


def run(label, argv, env=None):
    print(f"\n=== {label}: {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    rc = subprocess.run(argv, cwd=REPO, env=env).returncode
    return rc, time.monotonic() - t0


def main(argv):
    # --unit-done X.Y: the checkout's .venv runs CPython X.Y and `make check`
    # ran the unit tier with it already; that version gets the smoke test
    # in .venv and no second venv or unit tier (a few minutes of CI saved).
    unit_done = None
    if argv[:1] == ["--unit-done"]:
        unit_done, argv = tuple(int(x) for x in argv[1].split(".")), argv[2:]
    with open(PYPROJECT) as f:
        claimed = claimed_versions(f.read())
    wanted = claimed
    if argv:
        wanted = [tuple(int(x) for x in a.split(".")) for a in argv]
        unclaimed = [v for v in wanted if v not in claimed]
        if unclaimed:
            sys.exit(f"pythons: {', '.join('%d.%d' % v for v in unclaimed)} not claimed "
                     f"by pyproject.toml")
    rows, missing, failed = [], [], False
    for version in wanted:
        name = "%d.%d" % version
        found = find(version)
        if not found:
            missing.append(name)
            print(f"\n=== {name}: no CPython {name} on this machine "
                  f"(looked in pyenv's versions and for python{name} on PATH)", flush=True)
            continue
        exe, full = found
        if version == unit_done:
            py, how = os.path.join(REPO, ".venv", "bin", "python"), ".venv"
        else:
            try:
                py, how = ensure_venv(version, exe, full)
            except subprocess.CalledProcessError as e:
                rows.append((name, exe, f"no venv (exit {e.returncode})", ""))
                failed = True
                continue
        env = dict(os.environ, CAMEX=os.path.join(os.path.dirname(py), "camex"))
        if version == unit_done:
            urc, ut = 0, 0.0
            print(f"\n=== {name} unit tier: run by `make check` in .venv", flush=True)
        else:
            urc, ut = run(f"{name} unit tier", [py, "-m", "pytest"] + UNIT, env)
        src, st = run(f"{name} namespace smoke test",
                      [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", SMOKE], env)
        failed |= bool(urc or src)
        rows.append((".".join(map(str, full)), f"{exe} (venv {how})",
                     "ok (make check)" if version == unit_done else
                     f"{'ok' if urc == 0 else 'FAILED'} {ut:.0f} s",
                     f"{'ok' if src == 0 else 'FAILED'} {st:.0f} s"))
    print("\nPython    unit tier      smoke test     interpreter")
    for version, exe, unit, smoke in rows:
        print(f"{version:<9} {unit:<14} {smoke:<14} {exe}")
    claim = f"claimed: {claimed[0][0]}.{claimed[0][1]} to {claimed[-1][0]}.{claimed[-1][1]}"
    if missing:
        print(f"NOT FOUND: {', '.join(missing)} ({claim}); install them (e.g. pyenv install "
              f"{missing[0]}) or name the versions to test: make test-pythons "
              f"PYTHONS=\"{' '.join(r[0].rsplit('.', 1)[0] for r in rows) or '3.N'}\"")
    else:
        print(f"every claimed Python ran ({claim})")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

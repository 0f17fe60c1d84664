"""The packages under test, built once per run by `make deb`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
# Debian's python3 and tools, whatever a venv or pyenv puts first on PATH.
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def version() -> str:
    return subprocess.run(["dpkg-parsechangelog", "-S", "Version"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def debs() -> dict[str, Path]:
    """Build both packages from this tree (make deb, Debian's own tooling)."""
    env = {**os.environ, "PATH": DEBIAN_PATH}
    proc = subprocess.run(["make", "-s", "deb"], cwd=REPO, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    v = version()
    paths = {name: DIST / f"{name}_{v}_all.deb" for name in ("camex", "camex-dkms")}
    paths["changes"] = next(DIST.glob(f"camex_{v}_*.changes"))
    return paths



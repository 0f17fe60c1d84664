"""The repository stands alone: no tracked file may point at the ../shared
directory that sat beside the first checkouts (the legacy spec and the
captures of the C implementation). A user who clones the repository does
not have it; the protocol is docs/LEGACY.md and the captures are in
tests/vectors/captures.

This file is the one place allowed to name those paths.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()

# ../shared, shared/spec, shared/vectors, the machine's /work/shared, and a
# path built as Path(...) / "shared" / "vectors" in code.
FORBIDDEN = re.compile(
    rb"\.\./shared\b|\bshared/(?:spec|vectors)\b|/work/shared\b"
    rb"""|["']shared["']\s*/\s*["'](?:spec|vectors)["']""")


def tracked_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"],
                         capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def references(repo: Path, skip: frozenset = frozenset()) -> list[str]:
    """`FILE:LINE: text` of every tracked text file line naming ../shared."""
    hits = []
    for name in tracked_files(repo):
        path = repo / name
        if name in skip or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8000]:
            continue  # binary (a capture), as git grep judges it
        for lineno, line in enumerate(data.splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{name}:{lineno}: {line.decode(errors='replace').strip()}")
    return hits


def test_no_tracked_file_points_at_shared():
    hits = references(REPO, frozenset({THIS}))
    assert not hits, ("these files point at ../shared, which a clone does not have "
                      "(use docs/LEGACY.md and tests/vectors/captures):\n" + "\n".join(hits))


def test_the_check_finds_each_kind_of_reference(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    lines = {
        "a.md": "see ../shared/spec/legacy-v1.md\n",
        "b.py": 'VECTORS = REPO.parent / "shared" / "vectors"\n',
        "c.mk": "DIR ?= $(CURDIR)/../shared\n",
        "d.txt": "the captures in shared/vectors/README.md\n",
        "e.txt": "read /work/shared for facts\n",
        "ok.md": "a shared key; tests/vectors/captures; shared_secret/spec\n",
        "untracked.md": "../shared/spec\n",
    }
    for name, text in lines.items():
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "-C", str(tmp_path), "add", *[n for n in lines if n != "untracked.md"]],
                   check=True)
    found = sorted(hit.split(":")[0] for hit in references(tmp_path))
    assert found == ["a.md", "b.py", "c.mk", "d.txt", "e.txt"]

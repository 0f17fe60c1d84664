"""bench.ab: two camex trees through one tunnel, rounds in turn.

The same tree twice (this checkout) for one short round: a table with a
row per tree, the throughput and every daemon's user and system CPU per
GB. A wrong entry or a tree without a venv is refused with a clear
message before anything starts.
"""

import os
import re

import pytest

from bench import ab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.lab
def test_two_trees_one_round_each(capsys, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("bench.ab needs root (network namespaces)")
    # The same tree under two names: two rows, each its own tunnel's figures.
    other = tmp_path / "same"
    other.symlink_to(ROOT)
    assert ab.main([ROOT, str(other), "--rounds", "1", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("| tree"))
    assert head.split(" | ")[1:] == ["Gbit/s", "server user s/GB", "server sys s/GB",
                                     "client c1 user s/GB", "client c1 sys s/GB |"]
    rows = [line for line in out.splitlines() if line.startswith(("| " + ROOT, "| " + str(other)))]
    assert len(rows) == 2
    for row in rows:
        figures = [float(x) for x in re.findall(r"\| ([\d.]+)", row)]
        assert len(figures) == 5 and figures[0] > 0.05 and all(f > 0 for f in figures[1:])


@pytest.mark.parametrize("argv, why", [
    (["--entry", "wireguard-go-new"], "not a camex entry"),
    (["--entry", "no-such-tunnel"], "not a camex entry"),
])
def test_a_wrong_entry_is_refused(argv, why, capsys):
    with pytest.raises(SystemExit) as e:
        ab.main([ROOT] + argv)
    assert e.value.code == 2 and why in capsys.readouterr().err


def test_a_tree_without_a_venv_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ab.main([ROOT, str(tmp_path)])
    assert e.value.code == 2 and "no .venv/bin/camex" in capsys.readouterr().err

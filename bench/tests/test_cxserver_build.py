"""Building cxserver (bench/cserver): it compiles with -O2 -Wall -Wextra
without a warning, starts with camex's server options and refuses bad ones
with one line, and a machine without the compiler gets one error naming
what to install rather than a compiler trace."""

import subprocess

import pytest

from bench import cserver


def test_builds_without_warnings(tmp_path):
    res = subprocess.run(["make", "-C", str(cserver.HERE), f"OUT={tmp_path}"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr and "-Wall -Wextra" in res.stdout
    assert cserver.build(tmp_path) == str(tmp_path / "cxserver")


@pytest.mark.parametrize("args, error", [
    (["-M", "client", "-p", "7000"], "only 'server'"),
    (["-M", "server"], "-p/--port is required"),
    (["-M", "server", "-p", "70000"], "not a port"),
    (["-M", "server", "-p", "7000", "-e"], "needs a passphrase"),
    (["-M", "server", "-p", "7000", "-e", "-k", "x" * 64], "1 to 63 bytes"),
    (["-M", "server", "-p", "7000", "--log-level", "loud"], "--log-level"),
])
def test_bad_options_get_one_line(args, error):
    res = subprocess.run([cserver.build(), *args], capture_output=True, text=True, timeout=10)
    assert res.returncode == 1
    assert error in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_bad_config_file_stops_the_start(tmp_path):
    conf = tmp_path / "cx.conf"
    conf.write_text("gateway_ip=10.0.0.1\n")
    res = subprocess.run([cserver.build(), "-M", "server", "-p", "7000", "-f", str(conf)],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 1 and "key before any section" in res.stderr


def test_a_missing_compiler_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no gcc, no make
    with pytest.raises(cserver.BuildError, match="cxserver needs gcc, make.*install-deps"):
        cserver.build(tmp_path / "out")

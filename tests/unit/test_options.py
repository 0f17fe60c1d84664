"""Command-line options: what a user gets for good and bad command lines.

Every bad command line must give one line naming the option; -h and -v print
and exit 0; the passphrase never shows in repr() or in the start-up line.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import camex
from camex.daemon.options import Options, UsageError, parse_args, read_psk_file

CLIENT = ["-M", "client", "-s", "10.250.0.1", "-p", "7000"]
SERVER = ["-M", "server", "-p", "7000"]


def parse(argv, env=None):
    return parse_args(argv, environ=env or {})


# ------------------------------------------------------------ good lines


def test_manual_client_short_options():
    o = parse(CLIENT + ["-l", "10.0.0.2/24", "-g", "10.0.0.1", "-c", "10.251.0.0/24",
                        "-c", "192.168.0.0/16", "-t", "1400", "-b", "10.250.0.2",
                        "-T", "/dev/camex", "-P", "/run/c.pid", "-d", "veth0",
                        "-f", "/tmp/x.conf"])
    assert o.mode == "client" and o.auto is False
    assert o.server_host == "10.250.0.1" and o.port == 7000
    assert o.local_cidr == IPv4Interface("10.0.0.2/24")
    assert o.gateway_ip == IPv4Address("10.0.0.1")
    assert o.routes == [IPv4Network("10.251.0.0/24"), IPv4Network("192.168.0.0/16")]
    assert o.mtu == 1400 and o.bind_ip == "10.250.0.2"
    assert o.tun_dev == "/dev/camex" and o.pid_file == "/run/c.pid" and o.bind_dev == "veth0"
    assert o.config == "/tmp/x.conf" and o.config_given is True
    assert o.psk is None and o.encrypt is False


@pytest.mark.parametrize("given, kept", [
    ("2001:db8::1", "2001:db8::1"), ("[2001:db8::1]", "2001:db8::1"),
    ("2001:DB8:0::1", "2001:db8::1"), ("::1", "::1"), ("fd00::7", "fd00::7"),
    ("192.0.2.1", "192.0.2.1"), ("vpn.example.net", "vpn.example.net")])
def test_server_host_ipv6_literal_or_name(given, kept):
    o = parse(["-M", "client", "-a", "-p", "1", "-s", given])
    assert o.server_host == kept


@pytest.mark.parametrize("given, kept", [
    ("::1", "::1"), ("[2001:db8::2]", "2001:db8::2"), ("::", "::"), ("192.0.2.1", "192.0.2.1")])
def test_bind_ip_either_family(given, kept):
    assert parse(SERVER + ["-b", given]).bind_ip == kept


def test_long_options_and_defaults():
    o = parse(["--mode", "client", "--auto", "--name", "C1", "--server-host",
               "camex.example.net", "--port", "1"])
    assert o.auto is True and o.name == "C1" and o.server_host == "camex.example.net"
    assert o.local_cidr is None and o.mtu is None and o.routes == []
    assert o.config == "/etc/camex/camex.conf" and o.config_given is False
    assert o.log_level == "info" and o.protocol == "auto" and o.legacy is True
    assert o.server_tun is False and o.keepalive == 25
    assert o.control_socket == "/run/camex/client-1.sock"


def test_attached_values_and_combined_flags():
    o = parse(["-Mserver", "-p7000", "-ek", "pass", "--log-level=DEBUG"])
    assert o.mode == "server" and o.port == 7000 and o.encrypt and o.psk == b"pass"
    assert o.log_level == "debug"


def test_server_extras():
    o = parse(SERVER + ["--no-legacy", "--server-tun", "--protocol", "v2",
                        "--keepalive", "0", "--control-socket", "/tmp/s.sock",
                        "-b", "10.250.0.1"])
    assert o.legacy is False and o.server_tun is True and o.protocol == "v2"
    assert o.keepalive == 0 and o.control_socket == "/tmp/s.sock"


def test_max_clients():
    assert parse(SERVER).max_clients == 65536
    assert parse(SERVER + ["--max-clients", "200"]).max_clients == 200


def test_rekey_after():
    assert parse(SERVER).rekey_after == 120
    o = parse(CLIENT + ["-l", "10.0.0.2/24", "--rekey-after", "10"])
    assert o.rekey_after == 10


def test_keylog():
    assert parse(SERVER).keylog is None
    o = parse(CLIENT + ["-l", "10.0.0.2/24", "--keylog", "/tmp/camex.keys"])
    assert o.keylog == "/tmp/camex.keys"
    assert "keylog=/tmp/camex.keys" in o.describe()


def test_sixteen_routes_are_allowed():
    routes = sum((["-c", f"10.{i}.0.0/16"] for i in range(16)), [])
    o = parse(CLIENT + ["-l", "10.0.0.2/24"] + routes)
    assert len(o.routes) == 16


def test_point_to_point_prefixes():
    assert parse(CLIENT + ["-l", "10.0.0.1/31"]).local_cidr == IPv4Interface("10.0.0.1/31")
    assert parse(CLIENT + ["-l", "10.0.0.0/31"]).local_cidr == IPv4Interface("10.0.0.0/31")
    assert parse(CLIENT + ["-l", "10.0.0.7/32"]).local_cidr == IPv4Interface("10.0.0.7/32")


# ------------------------------------------------------------ passphrases


def test_psk_from_env_and_precedence(tmp_path):
    o = parse(SERVER + ["-e"], env={"CAMEX_PSK": "from-env"})
    assert o.psk == b"from-env" and o.psk_source == "CAMEX_PSK"
    o = parse(SERVER + ["-e", "-k", "from-argv"], env={"CAMEX_PSK": "from-env"})
    assert o.psk == b"from-argv" and o.psk_source == "--psk"
    # An empty CAMEX_PSK= counts as unset.
    with pytest.raises(UsageError, match=r"^--encrypt: needs a passphrase"):
        parse(SERVER + ["-e"], env={"CAMEX_PSK": ""})


def test_psk_file(tmp_path):
    f = tmp_path / "psk"
    f.write_bytes(b"demo-global-secret\n")
    f.chmod(0o600)
    o = parse(SERVER + ["-e", "--psk-file", str(f)], env={"CAMEX_PSK": "other"})
    assert o.psk == b"demo-global-secret" and o.psk_source == "--psk-file"
    assert o.psk_file == str(f)
    f.write_bytes(b"crlf-secret\r\n")
    assert read_psk_file(str(f)) == b"crlf-secret"
    f.write_bytes(b"two\n\n")  # only one newline is a line ending
    assert read_psk_file(str(f)) == b"two\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602])
def test_psk_file_open_to_others_is_refused(tmp_path, mode):
    f = tmp_path / "psk"
    f.write_bytes(b"demo-global-secret\n")
    f.chmod(mode)
    with pytest.raises(UsageError) as exc:
        parse(SERVER + ["-e", "--psk-file", str(f)])
    msg = str(exc.value)
    assert msg.startswith("--psk-file: ") and f"mode {mode:04o}" in msg
    assert "chmod 600" in msg and "demo-global-secret" not in msg


def test_psk_file_problems(tmp_path):
    with pytest.raises(UsageError, match=r"^--psk-file: cannot open .*No such file"):
        parse(SERVER + ["--psk-file", str(tmp_path / "none")])
    with pytest.raises(UsageError, match=r"^--psk-file: .* is not a regular file"):
        parse(SERVER + ["--psk-file", str(tmp_path)])
    f = tmp_path / "empty"
    f.write_bytes(b"\n")
    f.chmod(0o600)
    with pytest.raises(UsageError, match=r"^--psk-file: passphrase must be 1..63 bytes, got 0"):
        parse(SERVER + ["--psk-file", str(f)])
    with pytest.raises(UsageError, match=r"^--psk-file: give either --psk or --psk-file"):
        parse(SERVER + ["-k", "a", "--psk-file", str(f)])


def test_passphrase_never_shown():
    o = parse(SERVER + ["-e", "-k", "hunter2-secret"])
    for text in (repr(o), o.describe(), str(o)):
        assert "hunter2-secret" not in text
        assert "psk=<set, from --psk>" in text
    assert "psk=None" in parse(SERVER).describe()
    # A constructed Options hides it too.
    assert "zzz" not in repr(Options(psk=b"zzz"))


def test_psk_bytes_from_argv_are_exact():
    raw = b"caf\xc3\xa9-\xff"
    o = parse(SERVER + ["-k", os.fsdecode(raw)])
    assert o.psk == raw


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["-v"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"camex {camex.__version__}\n"
    with pytest.raises(SystemExit) as exc:
        parse(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("-M", "--mode", "-a", "--auto", "-n", "--name", "-l", "--local-cidr",
                "-g", "--gateway-ip", "-s", "--server-host", "-p", "--port", "-b",
                "--bind-ip", "-f", "--config", "-c", "--route-cidr", "-t", "--mtu",
                "-k", "--psk", "-e", "--encrypt", "-T", "--tun-dev", "-P", "--pid-file",
                "-d", "--bind-dev", "-v", "--version", "-h", "--help", "--log-level",
                "--psk-file", "--protocol", "--no-legacy", "--server-tun", "--keepalive",
                "--max-clients", "--control-socket", "CAMEX_PSK"):
        assert opt in out, opt


def test_help_fits_the_terminal_width(capsys, monkeypatch):
    for columns in ("60", "100"):
        monkeypatch.setenv("COLUMNS", columns)
        with pytest.raises(SystemExit):
            parse(["--help"])
        lines = capsys.readouterr().out.splitlines()
        assert max(map(len, lines)) <= int(columns) - 2
        assert any(len(line) > int(columns) - 12 for line in lines)


def test_parsing_a_command_line_does_not_load_shutil():
    # argparse's help formatter would import shutil (and zlib, bz2, lzma):
    # 0.6 MiB resident in every daemon for help it never prints.
    code = ("import sys; from camex.daemon.options import parse_args; "
            "parse_args(['-M', 'server', '-p', '7000', '--protocol', 'v2', '-e', '-k', 'p' * 16],"
            " environ={}); "
            "parse_args(['-M', 'client', '-s', '10.250.0.1', '-p', '7000', '-a'], environ={}); "
            "print(sorted(m for m in ('shutil', 'lzma', 'bz2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------ bad lines

M = ["-l", "10.0.0.2/24"]  # makes a client line complete
BAD = [
    ([], "--mode: required"),
    (["-p", "7000"], "--mode: required"),
    (["-M", "relay", "-p", "1"], "--mode: 'relay' is not one of client, server"),
    (["-M", "server"], "--port: required"),
    (["-M", "server", "-p", "70000"], "--port: 70000 is out of range 1..65535"),
    (["-M", "server", "-p", "0"], "--port: 0 is out of range 1..65535"),
    (["-M", "server", "-p", "-1"], "--port: -1 is out of range 1..65535"),
    (["-M", "server", "-p", "-"], "--port: '-' is not a number"),
    (["-M", "server", "-p", "7k"], "--port: '7k' is not a number"),
    (["-M", "server", "-p", "\u0667\u0660\u0660\u0660"], "--port: "),
    (["-M", "server", "-p"], "--port: needs a value"),
    (["-M", "client", "-p", "1"] + M, "--server-host: required for a client"),
    (CLIENT, "--local-cidr: required for a manual client (or use --auto)"),
    (SERVER + ["-a"], "--auto: only for a client"),
    (SERVER + ["-e"], "--encrypt: needs a passphrase (--psk, --psk-file or CAMEX_PSK)"),
    (SERVER + ["-e=yes"], "--encrypt: takes no value"),
    (SERVER + ["-k", ""], "--psk: passphrase must be 1..63 bytes, got 0"),
    (SERVER + ["-k", "x" * 64], "--psk: passphrase must be 1..63 bytes, got 64"),
    (SERVER + ["-k", "\u00e9" * 32], "--psk: passphrase must be 1..63 bytes, got 64"),
    (CLIENT + ["-l", "10.0.0.0/24"], "--local-cidr: '10.0.0.0/24' is the network address"),
    (CLIENT + ["-l", "10.0.0.255/24"], "--local-cidr: '10.0.0.255/24' is the broadcast"),
    (CLIENT + ["-l", "10.0.0.2"], "--local-cidr: '10.0.0.2' has no prefix length"),
    (CLIENT + ["-l", "10.0.0.2/x"], "--local-cidr: '10.0.0.2/x' has a bad prefix length"),
    (CLIENT + ["-l", "10.0.0.2/0"], "--local-cidr: "),
    (CLIENT + ["-l", "0.0.0.0/8"], "--local-cidr: "),
    (CLIENT + ["-l", "224.0.0.5/24"], "--local-cidr: "),
    (CLIENT + ["-l", "10.0.0.300/24"], "--local-cidr: '10.0.0.300' is not an IPv4 address"),
    (CLIENT + M + ["-g", "10.0.0"], "--gateway-ip: '10.0.0' is not an IPv4 address"),
    (CLIENT + M + ["-g", "10.0.0.2"], "--gateway-ip: 10.0.0.2 is the local address itself"),
    (CLIENT + M + ["-c", "10.251.0.1/24"], "--route-cidr: '10.251.0.1/24' has host bits set"),
    (CLIENT + M + ["-c", "10.1.0.0/16", "-c", "10.1.0.0/16"], "--route-cidr: 10.1.0.0/16 given twice"),
    (CLIENT + M + sum((["-c", f"10.{i}.0.0/16"] for i in range(17)), []),
     "--route-cidr: at most 16 routes, got 17"),
    (CLIENT + M + ["-t", "575"], "--mtu: 575 is out of range 576..9000"),
    (CLIENT + M + ["-t", "9001"], "--mtu: 9001 is out of range 576..9000"),
    (CLIENT + M + ["-t", "big"], "--mtu: 'big' is not a number"),
    (CLIENT + M + ["-b", "fe80::1%eth0"], "--bind-ip: 'fe80::1%eth0': an IPv6 scope id"),
    (CLIENT + M + ["-b", "::ffff:10.0.0.1"], "--bind-ip: '::ffff:10.0.0.1' is a v4-mapped "
     "address; write 10.0.0.1"),
    (CLIENT + M + ["-b", "[10.0.0.1]"], "--bind-ip: '[10.0.0.1]': only an IPv6 address"),
    (CLIENT + M + ["-b", "10.0.0"], "--bind-ip: '10.0.0' is not an IPv4 address"),
    (CLIENT + M + ["-n", ""], "--name: client ID must be 1..31 characters, got 0"),
    (CLIENT + M + ["-n", "x" * 32], "--name: client ID must be 1..31 characters, got 32"),
    (CLIENT + M + ["-n", "a b"], "--name: 'a b' may hold only"),
    (CLIENT + M + ["-n", "a=b"], "--name: 'a=b' may hold only"),
    (CLIENT + M + ["-n", "caf\u00e9"], "--name: "),
    (["-M", "client", "-p", "1", "-a", "-s", "bad host"], "--server-host: 'bad host' is neither"),
    (["-M", "client", "-p", "1", "-a", "-s", "fe80::1%eth0"],
     "--server-host: 'fe80::1%eth0': an IPv6 scope id (%...) is not supported"),
    (["-M", "client", "-p", "1", "-a", "-s", "fe80::1"], "--server-host: 'fe80::1' is link-local"),
    (["-M", "client", "-p", "1", "-a", "-s", "::ffff:192.0.2.1"],
     "--server-host: '::ffff:192.0.2.1' is a v4-mapped address; write 192.0.2.1"),
    (["-M", "client", "-p", "1", "-a", "-s", "[camex.example.net]"],
     "--server-host: '[camex.example.net]': only an IPv6 address goes in brackets"),
    (["-M", "client", "-p", "1", "-a", "-s", "[2001:db8::1"], "--server-host: '[2001:db8::1': "
     "unbalanced brackets"),
    (["-M", "client", "-p", "1", "-a", "-s", "2001:db8::zz"],
     "--server-host: '2001:db8::zz' is not an IPv4 or IPv6 address"),
    (["-M", "client", "-p", "1", "-a", "-s", "10.0.0.256"], "--server-host: '10.0.0.256' is not"),
    (["-M", "client", "-p", "1", "-a", "-s", "-x.example"], "--server-host: "),
    (CLIENT + M + ["-d", "a" * 16], "--bind-dev: "),
    (CLIENT + M + ["-d", "a/b"], "--bind-dev: 'a/b' is not an interface name"),
    (CLIENT + M + ["-T", ""], "--tun-dev: empty value"),
    (CLIENT + M + ["-P", ""], "--pid-file: empty value"),
    (CLIENT + M + ["-f", ""], "--config: empty value"),
    (CLIENT + M + ["--log-level", "loud"], "--log-level: 'loud' is not one of debug, info"),
    (CLIENT + M + ["--protocol", "v3"], "--protocol: 'v3' is not one of auto, legacy, v2"),
    (CLIENT + M + ["--no-legacy"], "--no-legacy: only for a server"),
    (CLIENT + M + ["--server-tun"], "--server-tun: only for a server"),
    (CLIENT + M + ["--max-clients", "5"], "--max-clients: only for a server"),
    (SERVER + ["--max-clients", "0"], "--max-clients: 0 is out of range 1..1048576"),
    (SERVER + ["--max-clients", "many"], "--max-clients: 'many' is not a number"),
    (SERVER + ["--no-legacy", "--protocol", "legacy"], "--no-legacy: contradicts --protocol legacy"),
    (SERVER + ["--keepalive", "3601"], "--keepalive: 3601 is out of range 0..3600"),
    (SERVER + ["--keepalive", "-1"], "--keepalive: -1 is out of range 0..3600"),
    (SERVER + ["--rekey-after", "9"], "--rekey-after: 9 is out of range 10..3600"),
    (SERVER + ["--rekey-after", "3601"], "--rekey-after: 3601 is out of range 10..3600"),
    (SERVER + ["--control-socket", ""], "--control-socket: empty value"),
    (SERVER + ["--keylog", ""], "--keylog: empty value"),
    (SERVER + ["--keylog", "/tmp"], "--keylog: /tmp is a directory"),
    (SERVER + ["--bogus"], "--bogus: unknown option"),
    (SERVER + ["--bogus=1"], "--bogus: unknown option"),
    (SERVER + ["--por", "1"], "--por: unknown option"),   # no abbreviations
    (SERVER + ["-x"], "-x: unknown option"),
    (SERVER + ["stray"], "unexpected argument 'stray'"),
    # Regression (hypothesis): a NUL in the path raised ValueError from os.open.
    (SERVER + ["--psk-file", "a\x00b"], "--psk-file: cannot open 'a\\x00b': embedded null byte"),
]


@pytest.mark.parametrize("argv,start", BAD, ids=[" ".join(a)[-40:] for a, _ in BAD])
def test_bad_command_lines(argv, start):
    with pytest.raises(UsageError) as exc:
        parse(argv)
    msg = str(exc.value)
    assert msg.startswith(start), msg
    assert "\n" not in msg


def test_bad_psk_is_not_echoed():
    secret = "my-secret-" * 8
    with pytest.raises(UsageError) as exc:
        parse(SERVER + ["-k", secret])
    assert "my-secret" not in str(exc.value)
    with pytest.raises(UsageError) as exc:
        parse(SERVER, env={"CAMEX_PSK": secret})
    assert str(exc.value).startswith("CAMEX_PSK: passphrase must be 1..63 bytes")
    assert "my-secret" not in str(exc.value)


# ------------------------------------------------------------ properties

_tokens = st.sampled_from([
    "-M", "--mode", "client", "server", "-a", "-n", "-l", "-g", "-s", "-p", "-b",
    "-f", "-c", "-t", "-k", "-e", "-T", "-P", "-d", "-v", "-h", "--psk-file",
    "--log-level", "--protocol", "--no-legacy", "--server-tun", "--keepalive",
    "--max-clients", "--control-socket", "--", "-", "7000", "10.0.0.2/24", "10.0.0.1", "10.251.0.0/24",
    "1500", "auto", "v2", "legacy", "debug", "=", "-ae", "-Mserver", "--port=1",
    "/nonexistent/psk", "\x00", "\n", "\udcff", "",
])
_argvs = st.lists(st.one_of(_tokens, st.text(max_size=12)), max_size=14)


@settings(max_examples=500, deadline=None)
@given(_argvs, st.one_of(st.just({}), st.builds(lambda v: {"CAMEX_PSK": v}, st.text(max_size=70))))
@example(["-M", "client", "-p", "1", "-a", "-s", "\u0661.\u0662"], {})
@example(["-M", "server", "-p", "1", "--psk-file", "\x00"], {})
@example(["-M", "server", "-p", "1", "-d", "\udcff"], {})
def test_any_argv_gives_options_or_usage_error(argv, env):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            o = parse_args(argv, environ=env)
    except UsageError as e:
        assert "\n" not in str(e) and str(e)
        return
    except SystemExit as e:  # only -h / -v may exit, and with success
        assert e.code == 0
        text = out.getvalue()
        assert text == f"camex {camex.__version__}\n" or text.startswith("usage: camex")
        assert any(a.startswith("-") and ("h" in a or "v" in a) for a in argv)
        return
    assert o.mode in ("client", "server") and 1 <= o.port <= 65535
    assert len(o.routes) <= 16
    assert o.psk is None or 1 <= len(o.psk) <= 63
    assert not o.encrypt or o.psk is not None

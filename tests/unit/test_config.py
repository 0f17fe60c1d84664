"""The server configuration file: good files, bad files (FILE:LINE messages),
and a property test that no text makes the parser fail other than by
ConfigError."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from camex.daemon.config import ConfigError, ServerConfig, load_config, parse_config

# The database of the auto-mode captures, exactly as in tests/vectors/captures/README.md.
VECTORS_DB = """\
[defaults]
gateway_ip=10.0.0.1
mtu=1500
route_cidr=10.251.0.0/24

[client C1]
local_cidr=10.0.0.2/24

[client C2]
local_cidr=10.0.0.3/24
psk=per-client-secret-c2
"""


def test_vectors_database(tmp_path):
    path = tmp_path / "camex.conf"
    path.write_text(VECTORS_DB)
    cfg = load_config(str(path))
    assert cfg.path == str(path)
    assert cfg.warnings == []
    p1 = cfg.profile_for("c1")  # IDs match case-insensitively
    assert p1.local_cidr == IPv4Interface("10.0.0.2/24")
    assert p1.gateway_ip == IPv4Address("10.0.0.1")
    assert p1.mtu == 1500
    assert p1.routes == [IPv4Network("10.251.0.0/24")]
    p2 = cfg.profile_for("C2")
    assert p2.local_cidr == IPv4Interface("10.0.0.3/24")
    assert p2.gateway_ip == IPv4Address("10.0.0.1")
    assert cfg.client("c2").psk == b"per-client-secret-c2"
    assert cfg.client("C2").id == "C2"
    assert cfg.client("c1").psk is None
    assert cfg.psk_entries() == [("c2", b"per-client-secret-c2")]
    assert cfg.profile_for("C3") is None
    assert cfg.client("C3") is None
    # The per-section profile holds only what that section says.
    assert cfg.client("C1").profile.gateway_ip is None
    assert cfg.client("C1").profile.routes == []


def test_overlay_and_route_order():
    cfg = parse_config(
        "# comment\n; other comment\n\n"
        "[Defaults]\n"
        "  gateway_ip = 10.0.0.1  \n"
        "mtu=1400\n"
        "route_cidr=10.251.0.0/24\n"
        "route_cidr=10.252.0.0/16\n"
        "[CLIENT cam-01]\n"
        "\tgateway_ip=10.0.0.254\n"
        "mtu=9000\n"
        "route_cidr=192.168.5.0/24\n"
        "route_cidr=10.251.0.0/24\n"   # also in defaults: installed once
        "local_cidr=10.0.0.9/31\n"
        "psk = with spaces inside \n"
    )
    p = cfg.profile_for("CAM-01")
    assert p.gateway_ip == IPv4Address("10.0.0.254")
    assert p.mtu == 9000
    assert p.local_cidr == IPv4Interface("10.0.0.9/31")
    assert p.routes == [IPv4Network("10.251.0.0/24"), IPv4Network("10.252.0.0/16"),
                        IPv4Network("192.168.5.0/24")]
    assert cfg.client("cam-01").psk == b"with spaces inside"
    # The defaults themselves were not changed by the overlay.
    assert cfg.defaults.mtu == 1400
    assert len(cfg.defaults.routes) == 2


def test_client_without_defaults_and_empty_file():
    cfg = parse_config("[client x]\nlocal_cidr=10.1.2.3/8\n")
    p = cfg.profile_for("X")
    assert p.local_cidr == IPv4Interface("10.1.2.3/8")
    assert p.gateway_ip is None and p.mtu is None and p.routes == []
    empty = parse_config("")
    assert isinstance(empty, ServerConfig)
    assert empty.clients == {} and empty.profile_for("x") is None


def test_unknown_key_warns_and_is_ignored():
    cfg = parse_config("[defaults]\nmtu=1500\ncolour=blue\n", path="/etc/c.conf")
    assert cfg.warnings == ["/etc/c.conf:3: unknown key 'colour' ignored"]
    assert cfg.defaults.mtu == 1500


def test_keys_are_case_insensitive_and_crlf_and_bom():
    cfg = parse_config("\ufeff[defaults]\r\nMTU=1500\r\nRoute_CIDR=10.9.0.0/16\r\n")
    assert cfg.defaults.mtu == 1500
    assert cfg.defaults.routes == [IPv4Network("10.9.0.0/16")]


def test_sixteen_routes_merged_is_the_limit():
    defaults = "".join(f"route_cidr=10.{i}.0.0/16\n" for i in range(8))
    own = "".join(f"route_cidr=10.{i}.0.0/16\n" for i in range(100, 108))
    cfg = parse_config("[defaults]\n" + defaults + "[client a]\n" + own)
    assert len(cfg.profile_for("a").routes) == 16


def test_psk_bytes_are_kept_exactly(tmp_path):
    path = tmp_path / "c.conf"
    secret = b"\xff\xfe-caf\xc3\xa9"   # not valid UTF-8, then UTF-8
    path.write_bytes(b"[client a]\npsk=" + secret + b"\n")
    assert load_config(str(path)).client("a").psk == secret


def test_psk_not_in_repr():
    cfg = parse_config(VECTORS_DB)
    assert "per-client-secret-c2" not in repr(cfg)
    assert "per-client-secret-c2" not in repr(cfg.client("c2"))


BAD = [
    # (text, line, words the message must contain)
    ("mtu=1500\n", 1, "outside a section"),
    ("[defaults]\njust words\n", 2, "expected key=value"),
    ("[defaults]\n\n[servers]\n", 3, "unknown section [servers]"),
    ("[clientC1]\n", 1, "unknown section"),
    ("[client]\n", 1, "client ID is empty"),
    ("[client a b]\n", 1, "printable ASCII"),
    ("[client " + "x" * 32 + "]\n", 1, "longer than 31"),
    ("[client a=b]\n", 1, "'='"),
    ("[defaults\nmtu=1500\n", 1, "no closing ']'"),
    ("[client C1]\n[client c1]\n", 2, "duplicate section [client c1] (first at line 1"),
    ("[defaults]\n[defaults]\n", 2, "duplicate section [defaults]"),
    ("[defaults]\nmtu=575\n", 2, "mtu: 575 is out of range 576..9000"),
    ("[defaults]\nmtu=9001\n", 2, "mtu: 9001 is out of range"),
    ("[defaults]\nmtu=1500 # big\n", 2, "mtu: '1500 # big' is not a number"),
    ("[defaults]\nmtu=+1500\n", 2, "mtu:"),
    ("[defaults]\nmtu=\n", 2, "mtu: empty value"),
    ("[defaults]\nmtu=1500\nmtu=1400\n", 3, "given twice"),
    ("[defaults]\ngateway_ip=10.0.0.256\n", 2, "gateway_ip: '10.0.0.256' is not an IPv4 address"),
    ("[defaults]\ngateway_ip=fe80::1\n", 2, "IPv6"),
    ("[client a]\nlocal_cidr=10.0.0.0/24\n", 2, "local_cidr: '10.0.0.0/24' is the network address"),
    ("[client a]\nlocal_cidr=10.0.0.255/24\n", 2, "broadcast"),
    ("[client a]\nlocal_cidr=10.0.0.2\n", 2, "no prefix length"),
    ("[client a]\nlocal_cidr=10.0.0.2/33\n", 2, "bad prefix length"),
    ("[client a]\nroute_cidr=10.251.0.1/24\n", 2, "host bits set (did you mean 10.251.0.0/24?)"),
    ("[client a]\nroute_cidr=10.251.0.0/24\nroute_cidr=10.251.0.0/24\n", 3, "listed twice"),
    ("[defaults]\npsk=global\n", 2, "psk: only allowed in [client ID] sections"),
    ("[client a]\npsk=" + "x" * 64 + "\n", 2, "psk: passphrase must be 1..63 bytes, got 64"),
    ("[client a]\n=value\n", 2, "missing key"),
    ("[defaults]\n" + "".join(f"route_cidr=10.{i}.0.0/16\n" for i in range(17)), 18,
     "more than 16 routes"),
    ("[defaults]\n" + "".join(f"route_cidr=10.{i}.0.0/16\n" for i in range(9))
     + "[client big]\n" + "".join(f"route_cidr=11.{i}.0.0/16\n" for i in range(8)), 11,
     "[client big]: 17 routes"),
]


@pytest.mark.parametrize("text,line,words", BAD)
def test_bad_files_name_file_and_line(text, line, words):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, path="/etc/camex/camex.conf")
    msg = str(exc.value)
    assert msg.startswith(f"/etc/camex/camex.conf:{line}: "), msg
    assert words in msg, msg
    assert exc.value.line == line
    assert "\n" not in msg


def test_bad_psk_value_is_not_echoed():
    secret = "s" * 70
    with pytest.raises(ConfigError) as exc:
        parse_config(f"[client a]\npsk={secret}\n")
    assert secret not in str(exc.value)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: cannot read: No such file or directory"


def test_nul_in_path_is_a_config_error():
    # Regression: a NUL in the path raised ValueError from open().
    with pytest.raises(ConfigError) as exc:
        load_config("bad\x00path")
    assert str(exc.value) == "bad\x00path: cannot read: embedded null byte"


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(str(tmp_path))
    assert str(exc.value).startswith(f"{tmp_path}: cannot read")


# ------------------------------------------------------------ properties

_pieces = st.sampled_from([
    "[defaults]", "[client C1]", "[client c1]", "[Client x]", "[client]", "[", "]",
    "local_cidr=", "gateway_ip=", "route_cidr=", "mtu=", "psk=", "foo=", "=",
    "10.0.0.2/24", "10.0.0.0/24", "10.251.0.0/24", "1500", "576", "9000", "99999",
    "#", ";", " ", "\t", "\n", "\r\n", "\ufeff", "\x00", "\udcff", "::1", "/",
])
_texts = st.one_of(st.text(), st.lists(st.one_of(_pieces, st.text(max_size=5))).map("".join))


@settings(max_examples=400, deadline=None)
@given(_texts)
@example("[client \x85]\n")          # non-ASCII whitespace inside a header
@example("[client a]\nmtu=\u0661\u0665\u0660\u0660\n")  # Arabic-Indic digits
def test_any_text_gives_config_or_config_error(text):
    try:
        cfg = parse_config(text, path="f.conf")
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith("f.conf:") and "\n" not in msg
        return
    assert isinstance(cfg, ServerConfig)
    for key, section in cfg.clients.items():
        prof = cfg.profile_for(key)
        assert prof is not None and len(prof.routes) <= 16
        assert section.psk is None or 1 <= len(section.psk) <= 63


def test_allowed_cidr_lists_networks_behind_a_client():
    from camex.daemon.config import ConfigError, parse_config
    cfg = parse_config("[client cam7]\nlocal_cidr=10.0.0.7/24\nallowed_cidr=192.168.7.0/24\n"
                       "allowed_cidr=192.168.8.0/24\n", "t.conf")
    assert [str(n) for n in cfg.profile_for("CAM7").allowed] == ["192.168.7.0/24", "192.168.8.0/24"]
    with pytest.raises(ConfigError, match=r"t\.conf:2: .*client"):
        parse_config("[defaults]\nallowed_cidr=192.168.7.0/24\n", "t.conf")


def test_every_problem_is_reported_in_line_order():
    """The parser goes on after a bad line: ConfigError.problems names each
    one (str() of the error is still the first, one line)."""
    text = ("[defaults]\nmtu=5\n[bogus]\nmtu=7\njust words\n[client C1]\n"
            "psk=\n[client c1]\nroute_cidr=10.1.2.3/16\nlocal_cidr=10.0.0.2/24\n"
            "[defaults]\ngateway_ip=x\n")
    with pytest.raises(ConfigError) as exc:
        parse_config(text, path="f.conf")
    got = [(p.line, p.message.split(":")[0]) for p in exc.value.problems]
    assert got == [(2, "mtu"), (3, "unknown section [bogus] (expected [defaults] or [client ID])"),
                   (4, "mtu"), (5, "expected key=value, got 'just words'"), (7, "psk"),
                   (8, "duplicate section [client c1] (first at line 6, IDs ignore case)"),
                   (9, "route_cidr"), (11, "duplicate section [defaults] (first at line 1)"),
                   (12, "gateway_ip")]
    assert str(exc.value) == "f.conf:2: mtu: 5 is out of range 576..9000"
    assert (exc.value.path, exc.value.line) == ("f.conf", 2)

"""scripts/manpage.py: the man pages say what the parsers say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from camex import __version__
from camex.dissect import cli as dissect
from camex.daemon import options

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "manpage.py"
spec = importlib.util.spec_from_file_location("manpage", SCRIPT)
manpage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(manpage)


@pytest.mark.parametrize("prog,section,parser", [
    ("camex", "8", options.build_parser),
    ("camex-dissect", "1", dissect.build_parser),
])
def test_every_option_and_its_help_is_in_the_page(prog, section, parser):
    page = manpage.page(prog, section)
    assert page.splitlines()[1].startswith(
        f'.TH {manpage.roff(prog).upper()} {section} ')
    assert f'"camex {__version__}"' in page.splitlines()[1]
    for action in parser()._actions:
        for opt in action.option_strings:
            assert f"\\fB{manpage.roff(opt)}\\fR" in page, opt
        if action.help:
            assert manpage.roff(action.help % {"prog": prog, **vars(action)}
                                if "%" in action.help else action.help) in page


def test_roff_escapes_what_troff_would_eat():
    assert manpage.roff(".hidden\n'also\nback\\slash -x") == \
        "\\&.hidden\n\\&'also\nback\\eslash \\-x"


def test_the_date_follows_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert manpage.build_date() == "2023-11-14"
    assert '"2023-11-14"' in manpage.page("camex", "8")


def test_camex_subcommands_are_in_the_page_with_their_own_help():
    page = manpage.page("camex", "8")
    commands = page[page.index(".SH COMMANDS"):]
    for cmd in ("status", "reload"):
        assert f".SS camex {cmd}\n.nf\nusage: camex {cmd} " in commands
    assert "\\-\\-json" in commands.split(".SS camex reload")[0]
    assert "\\-\\-json" not in commands.split(".SS camex reload")[1].split(".SH")[0]

"""The man pages generated from the argument parsers (``make docs``): every option and
every verb is documented, and groff reads the pages without a warning."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import pytest

from pyxenstored.cli import build_parser as daemon_parser
from pyxenstored.tool.main import build_parser as tool_parser
from pyxenstored.tool.manpage import render

PAGES = [("pyxenstore", 1, tool_parser), ("pyxenstored", 8, daemon_parser)]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


def _roff(option: str) -> str:
    return option.replace("-", "\\-")


@pytest.mark.parametrize(("name", "section", "factory"), PAGES, ids=[p[0] for p in PAGES])
def test_every_option_and_verb_is_on_the_page(name: str, section: int, factory: object) -> None:
    parser = factory()  # type: ignore[operator]
    page = render(parser, section)
    assert page.startswith(f".TH {name.upper()} {section} ")
    missing = [o for o in sorted(_options(parser)) if f"\\fB{_roff(o)}\\fR" not in page]
    assert missing == []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb in action.choices:
                assert f'.SS "{verb}"' in page


@pytest.mark.parametrize(("name", "section", "factory"), PAGES, ids=[p[0] for p in PAGES])
def test_groff_reads_the_page_without_warnings(name: str, section: int, factory: object) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    page = render(factory(), section)  # type: ignore[operator]
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww"], input=page, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert name in done.stdout


def test_the_command_line_writes_the_page() -> None:
    """What ``make docs`` runs."""
    done = subprocess.run(
        [sys.executable, "-m", "pyxenstored.tool.manpage", "pyxenstored.cli:build_parser", "8"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith(".TH PYXENSTORED 8 ")
    assert "\\-\\-stub\\-domain" in done.stdout


def test_roff_requests_in_text_are_escaped() -> None:
    parser = argparse.ArgumentParser(prog="demo", description="x.\n\n.rm everything\n'also")
    parser.add_argument("--back", help="a \\ backslash")
    page = render(parser, 1)
    assert "\n.rm" not in page and "\n'also" not in page
    assert "a \\e backslash" in page

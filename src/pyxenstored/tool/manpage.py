"""Man pages from argparse parsers: ``python -m pyxenstored.tool.manpage``.

Usage (what ``make docs`` runs)::

    python -m pyxenstored.tool.manpage pyxenstored.tool.main:build_parser 1 > pyxenstore.1
    python -m pyxenstored.tool.manpage pyxenstored.cli:build_parser 8 > pyxenstored.8

The argument names a function that returns an :class:`argparse.ArgumentParser` (it is
imported by name, so this module depends on no command line in particular). The page
has NAME, SYNOPSIS, DESCRIPTION, OPTIONS (each argument group of the parser in its own
section), COMMANDS (each subparser: its usage, description and options), the parser's
epilog as NOTES, and SEE ALSO. Help strings are expanded as ``--help`` expands them
(``%(default)s``...). The output depends only on the parser and the package version
(no date), so builds are reproducible.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "render"]

#: What every page refers to.
SEE_ALSO = {
    "pyxenstore": "pyxenstored(8), xenstore-read(1), xenstore-ls(1), xenstore-control(1)",
    "pyxenstored": "pyxenstore(1), xenstored(8), xl(1)",
}


def _escape(text: str) -> str:
    """Text safe for roff: backslashes and hyphens escaped, no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def _paragraphs(text: str) -> str:
    """Prose (argparse joins lines anyway) as roff paragraphs."""
    parts = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    return "\n.PP\n".join(_escape(p) for p in parts)


def _usage(parser: argparse.ArgumentParser) -> str:
    usage = parser.format_usage().strip()
    if usage.startswith("usage: "):
        usage = usage[len("usage: ") :]
    return " ".join(usage.split())


def _version() -> str:
    try:
        from importlib.metadata import version

        return version(__name__.split(".")[0])
    except Exception:  # not installed: the page is still useful
        return ""


def _invocation(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    """``-n NR, --number NR`` / ``KEY``, as --help shows it, in roff bold/italic."""
    if not action.option_strings:
        return f"\\fI{_escape(formatter._metavar_formatter(action, action.dest)(1)[0])}\\fR"
    parts = []
    for option in action.option_strings:
        part = f"\\fB{_escape(option)}\\fR"
        if action.nargs != 0:
            default = action.dest.upper()
            metavar = formatter._format_args(action, default)
            part += f" \\fI{_escape(metavar)}\\fR"
        parts.append(part)
    return ", ".join(parts)


def _actions(parser: argparse.ArgumentParser, skip_help: bool) -> list[str]:
    """One roff section body per argument group that has something to say."""
    formatter = parser._get_formatter()
    sections = []
    for group in parser._action_groups:
        entries = []
        for action in group._group_actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if action.help == argparse.SUPPRESS:
                continue
            if skip_help and isinstance(action, argparse._HelpAction):
                continue
            help_text = formatter._expand_help(action) if action.help else ""
            entries.append(f".TP\n{_invocation(action, formatter)}\n{_paragraphs(help_text)}")
        if entries:
            title = group.title or "arguments"
            intro = f"{_paragraphs(group.description)}\n" if group.description else ""
            sections.append((title, intro + "\n".join(entries)))
    return [f'.SS "{_escape(title.capitalize())}"\n{body}' for title, body in sections]


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def render(parser: argparse.ArgumentParser, section: int) -> str:
    """The man page of ``parser`` in section ``section`` (roff, ``man`` macros)."""
    name = parser.prog
    description = parser.description or ""
    summary = description.split(". ")[0].rstrip(".")
    out = [
        f'.TH {name.upper()} {section} "" "{_escape(name)} {_version()}" "{_escape(name)}"',
        ".SH NAME",
        f"{_escape(name)} \\- {_escape(summary[:1].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        _escape(_usage(parser)),
        ".SH DESCRIPTION",
        _paragraphs(description),
        ".SH OPTIONS",
        *_actions(parser, skip_help=False),
    ]
    commands = _subparsers(parser)
    if commands:
        out.append(".SH COMMANDS")
        for verb, sub in commands:
            out.append(f'.SS "{_escape(verb)}"')
            out.append(f".B {_escape(_usage(sub))}")
            out.append(".PP")
            if sub.description:
                out.append(_paragraphs(sub.description))
            for body in _actions(sub, skip_help=True):
                # A verb's groups become plain tagged lists under its own heading.
                out.append(body.split("\n", 1)[1])
    if parser.epilog:
        out += [".SH NOTES", _paragraphs(parser.epilog)]
    see_also = SEE_ALSO.get(name)
    if see_also:
        out += [".SH SEE ALSO", _escape(see_also)]
    return "\n".join(line for line in out if line) + "\n"


def _load(spec: str) -> Callable[[], argparse.ArgumentParser]:
    module, _, function = spec.partition(":")
    factory: Callable[[], argparse.ArgumentParser] = getattr(
        importlib.import_module(module), function
    )
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pyxenstored.tool.manpage MODULE:FUNCTION SECTION``: the page on stdout."""
    cli = argparse.ArgumentParser(
        prog="python -m pyxenstored.tool.manpage", description=__doc__.split("\n")[0]
    )
    cli.add_argument("factory", help="MODULE:FUNCTION returning an ArgumentParser")
    cli.add_argument("section", type=int, help="the manual section (1, 8)")
    args = cli.parse_args(argv)
    sys.stdout.write(render(_load(args.factory)(), args.section))
    return 0


if __name__ == "__main__":
    sys.exit(main())

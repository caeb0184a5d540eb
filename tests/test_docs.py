"""The README and the manual in docs/ name only commands, options and files that exist.

A page that says `wartune transfer --zeta-from wrn10-0.5` is a promise to the user who
pastes it. When a command or an option is renamed, or a linked page or file moves, the page
must change with it. So every `wartune ...` command in a page's code blocks (and in its
inline code) is checked against that command's own `--help`, and every link and repository
path a page names against the files here. A stale page then fails CI, not a user.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wartune.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)  # indented in a list too
INLINE = re.compile(r"`([^`]+)`")
# `wartune` as a program: at a line's start or after a space, bare or with its folder
# (`.venv/bin/wartune`), then at least one word. `wartune:` (its messages) and `wartune/`
# (its package folder) are not commands.
COMMAND = re.compile(r"(?:^|(?<=\s))(?:[\w.~-]*/)*wartune[ \t]+(?P<rest>\S.*)", re.M)
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")
WORD = re.compile(r"[a-z][\w-]*")
# Where a command ends inside a shell line: a comment, or the next command.
COMMAND_END = re.compile(r"\s#|\s&&\s|\s;\s|\s\|\s")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Repository paths named in text or code, read from the repository root.
REPO_PATH = re.compile(
    r"(?<![\w./~-])(?:search_spaces|benchmarks|docs|tests|wartune|\.ci)/(?:[\w./-]*[\w/])?"
)
SHELL = {"bash", "sh", "shell", "console"}
# In a shell block a command may follow another (`... && .venv/bin/wartune search`); in a
# plain block (output, a file listing) only a line that starts with `wartune` is one, since
# prose there says "the wartune release". Python and data blocks hold no commands.
PLAIN = {"", "text"}
COMMENT = re.compile(r"(?:^|\s)#.*$", re.M)


@cache
def _help(words: tuple[str, ...]) -> str | None:
    """`wartune WORDS --help`, or None when no such command exists. Cached: a command's help
    is read once however many lines name it. Wide, plain output so no option is wrapped."""
    result = CliRunner().invoke(
        app,
        [*words, "--help"],
        terminal_width=250,
        env={"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"},
    )
    return result.output if result.exit_code == 0 else None


def _is_group(help_text: str) -> bool:
    """A group (`wartune zeta`) takes a subcommand: its usage line says so."""
    return "COMMAND [ARGS]" in help_text


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _logical_lines(code: str) -> list[tuple[int, str]]:
    """A block's lines, each with its index in the block, with a command's continuation lines
    joined on: after a trailing backslash, or an indented line of options
    (`               [--epochs N] ...`, as a synopsis spells them)."""
    joined: list[tuple[int, str]] = []
    continued = False
    for index, line in enumerate(code.splitlines()):
        follows = continued or (line[:1].isspace() and line.lstrip().startswith(("[", "-")))
        if joined and follows:
            joined[-1] = (joined[-1][0], joined[-1][1] + " " + line.strip().removesuffix("\\"))
        else:
            joined.append((index, line.removesuffix("\\")))
        continued = line.endswith("\\")
    return joined


def commands(page: Path) -> list[tuple[int, str]]:
    """Every `wartune ...` command a page shows, with its line: in shell and plain code
    blocks, and in inline code that starts with `wartune `."""
    text = page.read_text()
    found: list[tuple[int, str]] = []
    for block in FENCE.finditer(text):
        kind = block[1].lower()
        if kind not in SHELL | PLAIN:
            continue
        first = _line_of(text, block.start(2))
        for index, line in _logical_lines(block[2]):
            line = COMMENT.sub("", line) if kind in SHELL else line
            for match in COMMAND.finditer(line):
                if kind in PLAIN and line[: match.start()].strip():
                    continue
                found.append((first + index, COMMAND_END.split(match["rest"], maxsplit=1)[0]))
    prose = FENCE.sub(lambda block: "\n" * block[0].count("\n"), text)
    for span in INLINE.finditer(prose):
        if match := re.fullmatch(r"(?:[\w.~-]*/)*wartune\s+(?P<rest>\S.*)", span[1], re.S):
            found.append((_line_of(prose, span.start()), " ".join(match["rest"].split())))
    return found


def problems_with_command(rest: str) -> list[str]:
    """What is wrong with `wartune REST`: an unknown command, or options its help lacks."""
    tokens = rest.split()
    words: list[str] = []
    help_text = None
    for token in tokens:
        if not WORD.fullmatch(token) or (help_text is not None and not _is_group(help_text)):
            break
        words.append(token)
        help_text = _help(tuple(words))
        if help_text is None:
            return [f"no command `wartune {' '.join(words)}`"]
    if help_text is None:
        return [f"`wartune {rest}` names no command"]
    known = set(OPTION.findall(help_text))
    command = " ".join(words)
    return [
        f"`wartune {command}` has no option {option}"
        for option in OPTION.findall(rest)
        if option not in known
    ]


def missing_paths(page: Path) -> list[str]:
    """Links (relative to the page) and repository paths (relative to the root) that are not
    here. Web links, anchors within a page and `runs/...` (what a search writes) are not files."""
    text = page.read_text()
    prose = FENCE.sub(lambda block: "\n" * block[0].count("\n"), text)
    missing = []
    for match in LINK.finditer(prose):
        target = match["target"].split("#", 1)[0]
        if not target or re.match(r"[a-z][\w+.-]*:", target):
            continue
        if not (page.parent / target).exists():
            missing.append(
                f"{_page_id(page)}:{_line_of(prose, match.start())}: link to {target}, which is not there"
            )
    for match in REPO_PATH.finditer(text):
        if not (ROOT / match[0]).exists():
            missing.append(
                f"{_page_id(page)}:{_line_of(text, match.start())}: path {match[0]}, which is not there"
            )
    return missing


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_command_a_page_shows_exists_with_the_options_it_names(page):
    """A user pastes these lines: each must name a real command, and each option must be one
    that command's `--help` lists, or the paste ends in `No such option`."""
    problems = [
        f"{_page_id(page)}:{line}: {p}"
        for line, rest in commands(page)
        for p in problems_with_command(rest)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_file_a_page_links_or_names_exists(page):
    """Pages moved into docs/ and files renamed leave dead links behind; each one fails here."""
    missing = missing_paths(page)
    assert not missing, "\n".join(missing)


def test_the_checks_read_the_readmes_commands_and_links():
    """The scanners must see what is there: were a pattern to match nothing, every page would
    pass. The README shows the main job and links into docs/."""
    readme = ROOT / "README.md"
    assert any(rest == "search --space lambda_grid" for _, rest in commands(readme))
    assert any(rest.startswith("zeta list") for page in PAGES for _, rest in commands(page))
    assert LINK.search(readme.read_text())["target"].startswith("docs/")
    assert problems_with_command("frobnicate --space x") == ["no command `wartune frobnicate`"]
    assert problems_with_command("search --no-such-flag") == [
        "`wartune search` has no option --no-such-flag"
    ]

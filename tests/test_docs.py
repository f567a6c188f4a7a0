"""The documentation stays true: every command line shown in README.md and docs/ parses with
the real command-line parser (nothing is run), every ``python benchmarks/NAME.py`` it shows
exists, every relative Markdown link resolves, and the README stays a short front door.

Command lines are taken from fenced code blocks (continuation lines joined, comments
stripped, chains split on ``&&``, ``||``, ``;`` and ``|``; leading ``VAR=value``
assignments skipped) and from inline code spans that start with ``debiaskit ``,
``python -m debiaskit`` or ``python benchmarks/``. Placeholders such as RUN_DIR are fine
where the parser takes a string; names that must exist (methods, datasets, networks,
augmentations, presets, ``--hp`` keys, ``sweep --search`` names) are checked unless
written as an upper-case placeholder. Inline spans may leave out required arguments
("`debiaskit explain lad` shows ..."); fenced command lines must be complete.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 10_000  # bytes (issue 19: the README is the front door, the rest is in docs/)
DOC_FILES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

SEPARATORS = {"&&", "||", ";", "|", "&"}
PYTHONS = {"python", "python3"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text] or ![alt], then
                         r"\(\s*(<[^>\n]+>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")  # (target "title")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]+>|\S+)", re.M)
COMMAND_START = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
                           r"(?:debiaskit\s+\S|python3?\s+(?:-m\s+debiaskit|benchmarks/))")
# a command anywhere in a shell line: at its start or after a separator, maybe after a prompt
SHELL_COMMAND = re.compile(r"(?:^|&&|\|\||;|\|)\s*(?:\$\s+)?(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
                           r"(?:debiaskit(?:\s|$)|python3?\s+(?:-m\s+debiaskit|benchmarks/))")


# ---------------------------------------------------------------------------------------
# Reading the Markdown files


@dataclass
class Doc:
    path: Path
    code_blocks: list = field(default_factory=list)  # (info string, [(line number, text)])
    prose: list = field(default_factory=list)  # paragraphs outside code: (first line, text)
    headings: list = field(default_factory=list)  # heading texts, in order


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@functools.lru_cache(maxsize=None)
def read_doc(path: Path) -> Doc:
    doc = Doc(path)
    fence = None  # (character, length) of the open fence
    block: list = []
    paragraph: list = []

    def end_paragraph():
        if paragraph:
            doc.prose.append((paragraph[0][0], "\n".join(text for _, text in paragraph)))
            paragraph.clear()

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if fence is None:
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                end_paragraph()
                fence = (match.group(1)[0], len(match.group(1)))
                info = match.group(2).strip().split()
                block = []
                doc.code_blocks.append((info[0].lower() if info else "", block))
            elif not line.strip():
                end_paragraph()
            else:
                heading = HEADING.match(line)
                if heading:
                    end_paragraph()
                    doc.headings.append(heading.group(2))
                paragraph.append((number, line))
        elif (match and match.group(1)[0] == fence[0] and len(match.group(1)) >= fence[1]
              and not match.group(2).strip()):
            fence = None
        else:
            block.append((number, line))
    end_paragraph()
    return doc


def logical_lines(lines):
    """Join backslash continuations: yields (first line number, joined text)."""
    start, parts = None, []
    for number, text in lines:
        if start is None:
            start = number
        stripped = text.rstrip()
        if stripped.endswith("\\") and not stripped.endswith("\\\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(text)
        yield start, " ".join(part.strip() for part in parts)
        start, parts = None, []
    if parts:
        yield start, " ".join(part.strip() for part in parts)


def tokens_of(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True  # words stay whole; comments ('#') are dropped
    return list(lexer)


def invocations(tokens: list[str]) -> list[tuple]:
    """('debiaskit', args) and ('script', path, args) for every command of a chained line."""
    found, segment = [], []
    for token in [*tokens, ";"]:
        if token not in SEPARATORS:
            segment.append(token)
            continue
        words = list(segment)
        segment.clear()
        while words and (ASSIGNMENT.fullmatch(words[0]) or words[0] in {"$", "env", "time"}):
            words.pop(0)
        if not words:
            continue
        if words[0] == "debiaskit":
            found.append(("debiaskit", words[1:]))
        elif words[0] in PYTHONS and words[1:3] == ["-m", "debiaskit"]:
            found.append(("debiaskit", words[3:]))
        elif words[0] in PYTHONS and len(words) > 1 and words[1].startswith("benchmarks/"):
            found.append(("script", words[1], words[2:]))
    return found


@dataclass(frozen=True)
class CommandLine:
    where: str  # "file:line"
    text: str
    inline: bool = False  # from a code span in the prose: may name a command without its
    # required arguments ("`debiaskit explain lad` shows ..."); options must still exist


def collect_command_lines() -> list[CommandLine]:
    out = []
    for path in DOC_FILES:
        doc = read_doc(path)
        for info, block in doc.code_blocks:
            if info in {"python", "py", "pycon", "json", "toml", "yaml"}:
                continue
            for number, text in logical_lines(block):
                if SHELL_COMMAND.search(text):
                    out.append(CommandLine(f"{rel(path)}:{number}", text.strip()))
        for first, text in doc.prose:
            for span in CODE_SPAN.finditer(text):
                content = " ".join(span.group(2).split())
                if COMMAND_START.match(content):
                    number = first + text.count("\n", 0, span.start())
                    out.append(CommandLine(f"{rel(path)}:{number} (inline)", content, True))
    return out


COMMAND_LINES = collect_command_lines()


# ---------------------------------------------------------------------------------------
# Parsing


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


@functools.lru_cache(maxsize=None)
def parser() -> argparse.ArgumentParser:
    from debiaskit.cli import build_parser

    top = build_parser()
    for each in _all_parsers(top):
        each.allow_abbrev = False  # a documented option is spelt out in full
    return top


def parse(args: list[str], partial: bool = False) -> argparse.Namespace | None:
    """Parse like ``debiaskit ARGS`` would, without running anything. The parser reports a
    user error as SystemExit(2) with one line on stderr (cli._Parser); any other exception
    is a failure too. ``--help`` (SystemExit(0)) counts as parsed, and with ``partial`` so
    does a command that only lacks required arguments (None: nothing to check further)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parser().parse_args(args)
    except SystemExit as exc:
        message = stderr.getvalue().strip()
        if exc.code in (0, None):
            return None
        if partial and "the following arguments are required" in message:
            return None
        raise AssertionError(f"exit status {exc.code}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises is a doc error
        raise AssertionError(f"{type(exc).__name__}: {exc}") from None


@functools.lru_cache(maxsize=None)
def registries() -> dict:
    from debiaskit.bench import PRESETS
    from debiaskit.data.augment import AUGMENTATIONS
    from debiaskit.data.protocols import PROTOCOLS
    from debiaskit.methods import METHODS
    from debiaskit.models import MODELS
    from debiaskit.precision import CHOICES
    from debiaskit.train import SELECTION

    return {"method": METHODS, "dataset": PROTOCOLS, "model": MODELS,
            "augment": AUGMENTATIONS, "preset": PRESETS, "selection": SELECTION,
            "precision": CHOICES}


def check_names(args: argparse.Namespace) -> list[str]:
    """Names the parser takes as free strings but that must exist."""
    known = registries()
    problems = []

    def check(kind, value):
        if value is None or PLACEHOLDER.fullmatch(str(value)):
            return
        if value not in known[kind]:
            problems.append(f"unknown {kind} {value!r} (known: {', '.join(known[kind])})")

    if args.command in ("train", "sweep"):
        for kind in ("method", "dataset", "model", "augment", "selection", "precision"):
            check(kind, getattr(args, kind, None))
        method = known["method"].get(args.method)
        for item in args.hp or []:
            key = item.partition("=")[0].replace("-", "_")
            if method is not None and key not in method.declared_hparams:
                problems.append(f"method {args.method!r} has no hyper-parameter {key!r}")
        if args.command == "sweep" and method is not None and args.search:
            from debiaskit.bench.sweep import searchable

            for key in args.search.split(","):
                if key.strip() not in searchable(args.method):
                    problems.append(f"method {args.method!r} cannot search {key.strip()!r}")
    elif args.command == "data":
        check("dataset", args.dataset)
    elif args.command == "bench":
        check("preset", args.preset)
        check("precision", args.precision)
    elif args.command == "explain" and args.explain_command == "gradient-ratio":
        check("dataset", args.dataset)
        check("model", args.model)
    return problems


# ---------------------------------------------------------------------------------------
# Tests


def test_documented_command_lines_were_found():
    assert any(c.where.startswith("README.md:") for c in COMMAND_LINES)
    assert sum("debiaskit bench quick" in c.text for c in COMMAND_LINES) >= 1
    assert len(COMMAND_LINES) >= 50, [c.where for c in COMMAND_LINES]


@pytest.mark.parametrize("command", COMMAND_LINES, ids=[c.where for c in COMMAND_LINES])
def test_command_line_parses(command: CommandLine):
    try:
        tokens = tokens_of(command.text)
    except ValueError as exc:
        pytest.fail(f"{command.where}: cannot split {command.text!r}: {exc}")
    calls = invocations(tokens)
    assert calls, f"{command.where}: no debiaskit or benchmarks/ command in {command.text!r}"
    for call in calls:
        if call[0] == "script":
            _, script, args = call
            assert (ROOT / script).is_file(), f"{command.where}: {script} does not exist"
            if script == "benchmarks/peak_rss.py" and "--" in args:
                call = ("debiaskit", ["train", *args[args.index("--") + 1:]])
            else:
                continue
        args = call[1]
        try:
            namespace = parse(args, partial=command.inline)
        except AssertionError as exc:
            pytest.fail(f"{command.where}: `debiaskit {shlex.join(args)}` does not parse: {exc}")
        if namespace is not None:
            problems = check_names(namespace)
            assert not problems, f"{command.where}: `debiaskit {shlex.join(args)}`: " + \
                "; ".join(problems)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in read_doc(path).headings:
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path):
    """(line number, target) of every Markdown link and image outside code."""
    for first, text in read_doc(path).prose:
        plain = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)
        for pattern in (INLINE_LINK, REFERENCE_LINK):
            for match in pattern.finditer(plain):
                target = match.group(1)
                if target.startswith("<") and target.endswith(">"):
                    target = target[1:-1]
                yield first + plain.count("\n", 0, match.start()), target


@pytest.mark.parametrize("path", DOC_FILES, ids=[rel(p) for p in DOC_FILES])
def test_relative_links_resolve(path: Path):
    broken = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{rel(path)}:{number}: {target}"
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{where} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{where} (no such file)")
        elif fragment and resolved.suffix == ".md" and unquote(fragment) not in anchors(resolved):
            broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _commands(parser, prefix=()):
    """{"train": parser, "data info": parser, "explain": parser, ...}: every command of
    the CLI (a command with sub-commands also by itself)."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out[" ".join((*prefix, name))] = child
                out.update(_commands(child, (*prefix, name)))
    return out


def test_cli_doc_covers_every_command_with_its_real_options():
    """docs/cli.md lists every top-level command in its first paragraph and has a
    ``## `debiaskit COMMAND` `` section for it, and every option a section names (in code
    spans that are not whole command lines) is an option of that command."""
    from debiaskit.cli import build_parser

    commands = _commands(build_parser())
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    intro = text.split("\n\n")[1]
    sections = dict(re.findall(r"^## `debiaskit ([a-z -]+)`\n(.*?)(?=^## |\Z)", text,
                               re.M | re.S))
    top = [name for name in commands if " " not in name]
    assert [n for n in top if f"`{n}`" not in intro and f"`{n} " not in intro] == []
    assert [n for n in top if not any(k.split()[0] == n for k in sections)] == []
    wrong = []
    for name, body in sections.items():
        options = {o for a in commands[name]._actions for o in a.option_strings}
        prose = re.sub(r"^```.*?^```", "", body, flags=re.M | re.S)  # fenced: parsed above
        for span in re.findall(r"`([^`]+)`", prose):
            if not span.startswith("debiaskit "):
                wrong += [f"{name}: {o}" for o in re.findall(r"(?<![\w-])--[a-z][a-z-]*", span)
                          if o not in options]
    assert wrong == []


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; at most {README_LIMIT} (docs/)"


def test_readme_keeps_the_ci_test_command():
    """.ci/run takes the line after '# run the tests' as its test command; its pytest run
    shows why tests were skipped (-rs), so that no skip goes unseen."""
    lines = README.read_text(encoding="utf-8").splitlines()
    index = lines.index("# run the tests")
    command = lines[index + 1]
    assert "python -m pytest" in command
    pytest_args = shlex.split(command.split("python -m pytest", 1)[1].split("&&")[0])
    # -rs, or -r with other letters that include skips (s, a: all but passes, A: all)
    assert any(a.startswith("-r") and set(a[2:]) & set("saA") for a in pytest_args), command


def test_readme_says_how_to_avoid_the_cuda_download():
    """Without a GPU, the CPU-only PyTorch build goes in before `pip install -e .`."""
    text = README.read_text(encoding="utf-8")
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in text
    assert text.index("## Set-up on a fresh clone") < text.index(cpu) < text.index("pip install -e")


def _documented_defaults() -> list[tuple[str, str, str, str]]:
    """(doc file, method, hyper-parameter, documented default) of every row of a method
    doc's hyper-parameter table; the method is the section's (``## `name` ``), in a
    one-method page the page's, or the one a row names ("`key` (`method` only)")."""
    rows = []
    for path in sorted((ROOT / "docs" / "methods").glob("*.md")):
        lines = path.read_text().splitlines()
        names = re.findall(r"^## `(\w+)`", "\n".join(lines), flags=re.M)
        first = re.search(r"^\| `(\w+)` \|", "\n".join(lines), flags=re.M)
        method, in_table = (names[0] if names else first.group(1)), False
        for line in lines:
            heading = re.match(r"^## `(\w+)`", line)
            if heading:
                method = heading.group(1)
            if line.startswith("| hyper-parameter |"):
                in_table = True
                continue
            if in_table and not line.startswith("|"):
                in_table = False
            cells = [c.strip() for c in line.strip("|").split("|")]
            name = re.fullmatch(r"`(\w+)`(?: \(`(\w+)` only\))?", cells[0])
            if in_table and name:  # "`key` (`other` only)": a key of method `other`
                rows.append((path.name, name.group(2) or method, name.group(1), cells[1]))
    return rows


def test_method_docs_state_the_code_defaults():
    """Every documented default is the method's HParam default (a changed default must
    change its doc)."""
    from debiaskit.methods import get_method

    rows = _documented_defaults()
    assert len(rows) > 100
    wrong = []
    for doc, method, key, text in rows:
        default = get_method(method).declared_hparams[key].default
        if isinstance(default, bool) or isinstance(default, str):
            same = text == str(default)
        else:
            try:
                same = float(text) == float(default)
            except ValueError:
                same = False
        if not same:
            wrong.append(f"{doc}: {method}.{key} documented {text}, code {default!r}")
    assert not wrong, wrong


# ---------------------------------------------------------------------------------------
# No references to documents outside the repository

#: Documents a clone cannot resolve: the project's protocol and design notes beside the
#: checkout, its papers and protocol folders, and the papers by their number (cite them by
#: short name: docs/references.md). Joined at run time, not written out or concatenated
#: (the compiler folds constants), so neither this file nor its bytecode holds them.
OUTSIDE_REFERENCE = re.compile("|".join([re.escape(".".join(["PROTOCOLS", "md"])),
                                         re.escape(".".join(["DESIGN", "md"])),
                                         " ".join(["(?i:paper)", r"00\d"]),
                                         "/".join(["shared", "(?:papers|protocols)"])]))
SEARCHED = ["src", "tests", "docs", "tools", "benchmarks/*.py", "README.md"]
NOT_SEARCHED = ("benchmarks/results/", "__pycache__/", ".egg-info/")


def searched_files() -> list[Path]:
    paths = set()
    for entry in SEARCHED:
        for path in ROOT.glob(entry):
            paths.update([path] if path.is_file() else path.rglob("*"))
    return sorted(p for p in paths
                  if p.is_file() and not any(part in rel(p) for part in NOT_SEARCHED))


def outside_references(path: Path) -> list[str]:
    data = path.read_bytes()
    if b"\0" in data[:8192]:  # binary (arrays, archives)
        return []
    text = data.decode("utf-8", errors="replace")
    return [f"{rel(path)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
            for m in OUTSIDE_REFERENCE.finditer(text)]


def test_no_references_outside_the_repository():
    files = searched_files()
    assert ROOT / "README.md" in files and len(files) > 100
    found = [hit for path in files for hit in outside_references(path)]
    assert not found, ("cite docs/references.md's short names and docs in this repository "
                       "instead:\n" + "\n".join(found))

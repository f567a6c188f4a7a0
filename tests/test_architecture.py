"""The shape of the code: every import goes down the floors of docs/architecture.md (the
floor table there is the one statement of them, read by this test), no module is over
the size limit, and the counts the document states are the code's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "debiaskit"
DOC = ROOT / "docs" / "architecture.md"
#: The most lines a module may have (issue: one concern per module).
MAX_LINES = 450


def floors() -> dict[str, int]:
    """Room -> floor, from the table rows ``| N | `room`, `room` | ... |`` of the doc."""
    out = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for room in re.findall(r"`([A-Za-z_]+)`", m.group(2)):
                out[room] = int(m.group(1))
    return out


def room_of(module: str) -> str:
    """``debiaskit.a.b`` -> ``a`` (a top-level module or package); the package root itself
    (``__version__``) is ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str, str]]:
    """(importing file, its room, imported room) for every import of another room."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_init = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_init else parts)
        package = module if is_init else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if node.module is None or node.level and not node.module:
                    # from . import x: x is a module of the package, or one of its names
                    folder = PACKAGE.parent.joinpath(*target.split("."))
                    targets = [f"{target}.{a.name}" if (folder / f"{a.name}.py").exists()
                               or (folder / a.name).is_dir() else target for a in node.names]
                else:
                    targets = [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target == "debiaskit" or target.startswith("debiaskit."):
                    a, b = room_of(module), room_of(target)
                    if a != b:
                        out.append((str(path.relative_to(ROOT)), a, b))
    return out


def test_every_room_has_a_floor_and_every_import_goes_down():
    table = floors()
    rooms = {room_of(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts))
             for p in PACKAGE.rglob("*.py")}
    rooms = {r for r in rooms if r != "__init__"} | {"__init__"}
    assert rooms <= set(table), f"rooms without a floor in {DOC.name}: {rooms - set(table)}"
    upward = [(f, a, b) for f, a, b in imports() if table[b] >= table[a]]
    assert not upward, "imports that do not go down a floor: " + "; ".join(
        f"{f}: {a} (floor {table[a]}) -> {b} (floor {table[b]})" for f, a, b in upward)


def test_no_module_over_the_size_limit():
    big = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_documents_counts_are_the_codes():
    table = floors()
    edges = {(a, b) for _, a, b in imports()}
    text = DOC.read_text()
    m = re.search(r"(\d+) rooms on (\d+) floors, (\d+) room-to-room imports", text)
    assert m, f"{DOC.name} states the counts as 'N rooms on F floors, I room-to-room imports'"
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (
        len(table), len(set(table.values())), len(edges))


def test_every_registry_is_one_style_and_refuses_unknown_and_twice_registered_names():
    import pytest

    from debiaskit.data.protocols import PROTOCOLS
    from debiaskit.data.sources import SOURCES
    from debiaskit.errors import ConfigError
    from debiaskit.methods import METHODS
    from debiaskit.models import MODELS
    from debiaskit.registry import Registry

    for registry, known in ((METHODS, "erm"), (MODELS, "mlp"), (SOURCES, "mnist"),
                            (PROTOCOLS, "colored_mnist")):
        assert isinstance(registry, Registry) and registry.find(known) is registry[known]
        with pytest.raises(ConfigError, match=f"unknown {registry.kind} 'nope'; choose one of"):
            registry.find("nope")
        with pytest.raises(ValueError, match="registered twice"):
            registry.register(known, object())

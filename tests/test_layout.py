"""The repository explains itself and its layout shows the architecture (docs/architecture.md).

Checked here: every docs anchor cited anywhere (``docs/<page>.md#<anchor>``) exists; the package is layered
(a module imports only its own layer and those below it, never a command or a script); no import circle;
``SeDR/`` itself holds only subpackages and thin entry points; every module says its concern in its first
docstring line, and no two modules' names differ only by a suffix.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The original script paths and the ``python -m SeDR.X`` entry points:
# one call into SeDR.cli or SeDR.tools each.
ENTRY_POINTS = {
    "SeDR.train",
    "SeDR.inference",
    "SeDR.adore_train",
    "SeDR.index",
    "SeDR.search",
    "SeDR.export_original",
    "SeDR.ledger",
    "SeDR.evaluate",
}
SCRIPTS = ENTRY_POINTS
# Each subpackage and the layer it sits in (docs/architecture.md#layers): a module may import its own
# layer and lower ones. SeDR.testing holds the tests' and benchmarks' stand-ins: it may import the
# library, the library never imports it.
LAYERS = {
    "core": 0,
    "data": 1,
    "modeling": 2,
    "retrieval": 3,
    "training": 4,
    "api": 4,
    "tools": 5,
    "cli": 6,
    "demo": 7,
    "testing": 8,
}
ENTRY_POINT_LINES = 12  # non-blank lines after the docstring


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.split()]


def heading_anchors(md: Path) -> set[str]:
    """Explicit ``<a id>`` anchors and GitHub-style slugs of the headings of a Markdown file."""
    text = md.read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_cited_docs_anchor_exists():
    docs = {p.name: heading_anchors(p) for p in (ROOT / "docs").glob("*.md")}
    cite = re.compile(r"docs/([\w\-]+\.md)#([\w\-]+)|\]\(([\w\-]+\.md)#([\w\-]+)\)")
    cited, missing = set(), []
    for path in tracked("*.py", "*.md", "*.sh"):
        for m in cite.finditer(path.read_text(encoding="utf-8", errors="replace")):
            file, anchor = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            cited.add((file, anchor))
            if anchor not in docs.get(file, set()):
                missing.append(f"{path.relative_to(ROOT)}: docs/{file}#{anchor}")
    assert not missing, missing
    assert len({a for f, a in cited}) >= 20  # the code and README point readers at the docs


def _imports(path: Path, module: str) -> set[str]:
    """Project modules imported by ``path`` (absolute and relative imports, inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + [node.module])
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "SeDR"}


def _library_modules() -> dict[str, Path]:
    mods = {}
    for path in tracked("SeDR/*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def test_no_import_circle_and_no_script_imported_by_the_library():
    mods = _library_modules()
    graph = {m: {i for i in _imports(p, m) if i in mods and i != m} for m, p in mods.items()}
    for m, deps in graph.items():
        if m not in SCRIPTS:
            assert not deps & SCRIPTS, f"{m} imports the script(s) {deps & SCRIPTS}"
    for path in tracked("SeDR_Longformer/*.py", "SeDR_preprocess.py"):
        assert not _imports(path, "") & SCRIPTS, path
        assert (
            "SeDR_Longformer" not in path.read_text(encoding="utf-8").split("import", 1)[-1].split("\n", 1)[0]
        )
    # a package imports its submodules by name; only module-to-module edges can form a circle
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if module in ENTRY_POINTS:
        return 9
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_sits_in_a_layer_and_imports_only_lower_ones():
    mods = _library_modules()
    unplaced = [m for m in mods if m != "SeDR" and _layer(m) is None]
    assert not unplaced, f"add these to LAYERS (docs/architecture.md#layers): {unplaced}"
    upward = []
    for m, path in mods.items():
        if m == "SeDR":  # the package re-exports the Retriever lazily (PEP 562)
            continue
        for dep in _imports(path, m):
            target = next((d for d in (dep, dep.rsplit(".", 1)[0]) if d in mods), None)
            if target and target != "SeDR" and _layer(target) > _layer(m):
                upward.append(f"{m} (layer {_layer(m)}) imports {target} (layer {_layer(target)})")
    assert not upward, upward
    assert {d for d in _imports(ROOT / "SeDR/__init__.py", "SeDR")} <= {"SeDR.api", "SeDR.api.retriever"}


def test_the_package_folder_holds_subpackages_and_entry_points_only():
    top = {p.name for p in (ROOT / "SeDR").iterdir() if not p.name.startswith((".", "__pycache__"))}
    subpackages = {p for p in top if (ROOT / "SeDR" / p / "__init__.py").exists()}
    assert subpackages == set(LAYERS), subpackages ^ set(LAYERS)
    modules = top - subpackages
    assert modules == {"__init__.py"} | {m.split(".")[1] + ".py" for m in ENTRY_POINTS}, modules
    for name in ENTRY_POINTS:
        path = ROOT / (name.replace(".", "/") + ".py")
        deps = _imports(path, name)
        assert deps and all(d.split(".")[1] in {"cli", "tools", "core"} for d in deps), (name, deps)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        code_lines = path.read_text(encoding="utf-8").splitlines()[tree.body[0].end_lineno :]
        assert len([line for line in code_lines if line.strip()]) <= ENTRY_POINT_LINES, name


def test_every_module_names_its_concern_and_names_do_not_differ_by_a_suffix():
    paths = tracked("SeDR/*.py", "SeDR_Longformer/*.py", "SeDR_preprocess.py")
    for path in paths:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()[0]) > 20, (
            f"{path.relative_to(ROOT)}: no docstring naming its concern"
        )
    # Commands are named after their scripts (SeDR/cli/train.py for SeDR/train.py); the library's names
    # must not be one word apart (batch vs batching, index vs indexes).
    library = [
        p
        for p in paths
        if p.parent not in {ROOT, ROOT / "SeDR", ROOT / "SeDR" / "cli", ROOT / "SeDR_Longformer"}
    ]
    stems = sorted({p.stem for p in library if p.stem != "__init__"})
    similar = [
        (a, b)
        for a in stems
        for b in stems
        if a != b and b.startswith(a) and b[len(a) :] in {"s", "es", "ing", "er", "ers", "ion", "ions"}
    ]
    assert not similar, similar

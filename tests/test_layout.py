"""The repository explains itself and its layout shows the architecture (docs/architecture.md).

Checked here: every docs anchor cited anywhere (``docs/<page>.md#<anchor>``) exists; no import circle among the
package's modules; no module of the library imports a script; no module over 450 lines.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"SeDR.train", "SeDR.inference", "SeDR.adore_train", "SeDR.index", "SeDR.search"}
MAX_MODULE_LINES = 450


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
        assert "SeDR_Longformer" not in path.read_text(encoding="utf-8").split("import", 1)[-1].split("\n", 1)[0]
    # a package imports its submodules by name; only module-to-module edges can form a circle
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("path", tracked("SeDR/*.py", "SeDR_Longformer/*.py", "SeDR_preprocess.py"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_the_size_limit(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES

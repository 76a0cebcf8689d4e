"""Rebuild the demo's man-page snapshot from Debian's ``manpages``/``manpages-dev``, rendered to text.

    python tools/build_manpage_snapshot.py --out SeDR/demo/data/manpages.jsonl.gz --overwrite
    python tools/build_manpage_snapshot.py --out /tmp/few.jsonl.gz --pages rename.2 link.2 unlink.2

A maintainer tool, not part of the installed package (it imports :mod:`SeDR.demo.collection`
for the collection's rules and the snapshot format). Each English page of the two packages
(found with ``dpkg -L``, or in a ``dpkg-deb -x`` folder given as ``--source``) is rendered by the
system's ``groff -t -man -Tutf8`` (or ``mandoc -Tutf8``) on one very long line per paragraph,
without hyphenation or page breaks; the NAME line, the body and the SEE ALSO references are then
read from the rendered text. Symbolic links and one-line ``.so`` stubs become aliases of the page
they point to. The source's leading comment block (copyright, licence, history) is kept verbatim
in each record's ``notice``, as the pages' licences require.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from SeDR.core.errors import MissingInputError, SeDRInputError, exit_on_input_error
from SeDR.core.runtime import setup_logging
from SeDR.demo.collection import (
    DEFAULT_SEED,
    LICENSE_FILE,
    Collection,
    Page,
    collection_from_pages,
    format_stats,
    normalize_space,
    write_snapshot,
)

logger = logging.getLogger("build_manpage_snapshot")

PACKAGES = ("manpages", "manpages-dev")
HOW_TO_GET = (
    "install Debian's man pages (`apt-get install manpages manpages-dev`), or run "
    "`apt-get download manpages manpages-dev` and `dpkg-deb -x FILE.deb DIR` for both files "
    "and pass --source DIR"
)
LICENCE_NOTE = (
    "Text derived from the Linux man-pages project as packaged by Debian (manpages, manpages-dev), "
    "rendered to plain text by {renderer}. Each page keeps its own free licence (Linux-man-pages-copyleft, "
    "GPL-2+, GPL-1+, GPL-2, BSD-2/3/4-clause, Expat); each record's 'notice' field holds the page's "
    "copyright notice and licence identifier, and LICENSE-manpages.txt (Debian's copyright file) "
    "holds the licence texts. Modification: rendered to plain text (text otherwise unchanged), the NAME "
    "description moved from the body to the query, by tools/build_manpage_snapshot.py."
)
# Output line length in ens: long enough that a paragraph is one line (no wrapping, no hyphens).
LINE_LENGTH = 20_000
RENDERERS = {
    # -t tbl, -k/-Kutf8 preconv; -P-cbou: plain characters (no overstriking, no SGR escapes);
    # LL one long line, HY=0 no hyphenation, cR=1 one continuous page (no page headers between).
    "groff": [
        "groff",
        "-t",
        "-k",
        "-Kutf8",
        "-man",
        "-Tutf8",
        "-P-cbou",
        f"-rLL={LINE_LENGTH}n",
        "-rHY=0",
        "-rcR=1",
    ],
    "mandoc": ["mandoc", "-man", "-Tutf8", f"-Owidth={LINE_LENGTH}"],
}
# What a terminal device prints besides text: overstrikes (x BACKSPACE x) and SGR colour escapes.
_OVERSTRIKE_RE = re.compile(r".\x08")
_SGR_RE = re.compile(r"\x1b\[[0-9;]*m")
# The utf8 device's hyphens, minus, double quotes and URL brackets, as the ASCII the sources mean.
_ASCII = str.maketrans(
    {"\u2010": "-", "\u2011": "-", "\u2212": "-", "\u201c": '"', "\u201d": '"', "\u27e8": "<", "\u27e9": ">"}
)
# Table rules are layout: a line of box-drawing characters (U+2500-U+257F) is a horizontal rule, and
# a vertical rule is a "│" in a row with another one or above or below one; a lone one is text (the
# character-set pages list the box-drawing characters).
_BOX = "".join(chr(c) for c in range(0x2500, 0x2580))
_RULE_RE = re.compile(f"^ *[{_BOX}][{_BOX} ]*[{_BOX}][{_BOX} ]*$")
_VBAR = "\u2502"
_FILE_RE = re.compile(r"^(?P<name>.+)\.(?P<section>\d[a-z]*)(?:\.gz)?$")
# name(section) references: "rename(2)", "sysexits.h(3head)", "pthread_create(3)".
_REF_RE = re.compile(r"(?<![\w.+:-])([A-Za-z_][\w.+:-]*?)\s?\((\d[a-z]*)\)")
_NAME_SPLIT_RE = re.compile(r"\s+[-\u2013\u2014\u2212]+\s+|\s+-(?=\S)|(?<=\S)-\s+")
# A section heading as rendered: a line at column 0 in upper case (subsection headings are indented).
_HEADING_RE = re.compile(r"^[A-Z][A-Z0-9 ,/()&'_-]*$")


# --------------------------------------------------------------------------------------------
# Finding the packages' files
# --------------------------------------------------------------------------------------------


def read_man_file(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def dpkg_file_list(packages: Sequence[str] = PACKAGES) -> list[Path] | None:
    """Files dpkg lists for ``packages``, or None when dpkg is absent or does not know them."""
    try:
        res = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True, check=False)
    except (FileNotFoundError, PermissionError):
        return None
    if res.returncode != 0:
        return None
    return [Path(line) for line in res.stdout.splitlines() if line.startswith("/")]


def package_versions(root: Path, packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """``{package: version}``: ``dpkg-query -W`` for the installed packages, else the first line of each
    package's ``changelog.Debian.gz`` in the extracted folder (the source version, equal for these two)."""
    versions = {}
    for pkg in packages:
        version = "unknown"
        if root.resolve() == Path("/"):
            try:
                res = subprocess.run(
                    ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False
                )
                version = res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else version
            except (FileNotFoundError, PermissionError):
                pass
        changelog = root / "usr/share/doc" / pkg / "changelog.Debian.gz"
        if version == "unknown" and changelog.exists():
            m = re.match(r"^\S+ \(([^)]+)\)", read_man_file(changelog))
            version = m.group(1) if m else version
        versions[pkg] = version
    return versions


def man_files(root: str | Path = "/") -> list[Path]:
    """The two packages' English man files under ``root``
    ("/" via dpkg's lists, else a ``dpkg-deb -x`` folder)."""
    root = Path(root)
    if root.resolve() == Path("/"):
        listed = dpkg_file_list()
        if listed is None:
            raise MissingInputError("/usr/share/man (Debian packages manpages, manpages-dev)", HOW_TO_GET)
        files = [p for p in listed if "/share/man/man" in str(p) and _FILE_RE.match(p.name)]
    else:
        mandir = root / "usr/share/man"
        if not mandir.is_dir():
            raise MissingInputError(mandir, HOW_TO_GET)
        files = [p for p in mandir.glob("man*/*") if _FILE_RE.match(p.name)]
    # translations live in /usr/share/man/<lang>/
    files = [p for p in files if p.parent.parent.name == "man" and p.parent.name.startswith("man")]
    if not files:
        raise MissingInputError(root / "usr/share/man", HOW_TO_GET)
    return sorted(set(files), key=lambda p: (p.parent.name, p.name))


def identity(path: Path) -> tuple[str, str]:
    """``(name, section)`` from a file name: ``rename.2.gz`` -> ``("rename", "2")``."""
    m = _FILE_RE.match(path.name)
    if m is None:
        raise ValueError(f"not a man page file name: {path}")
    return m.group("name"), m.group("section")


def so_target(source: str) -> str | None:
    """The target of a one-line ``.so man2/foo.2`` stub (comments aside), else None."""
    content = [ln for ln in source.splitlines() if ln.strip() and not re.match(r"^[.'][ \t]*\\\"", ln)]
    if len(content) == 1 and re.match(r"^\.so\s+\S", content[0]):
        return content[0].split(None, 1)[1].strip()
    return None


def resolve_so(root: Path, target: str) -> Path | None:
    """The file a ``.so man2/foo.2`` stub points to (compressed or not)."""
    for candidate in (root / "usr/share/man" / target, root / "usr/share/man" / f"{target}.gz"):
        if candidate.exists():
            return candidate
    return None


def leading_comment_block(source: str) -> str:
    """The full-line comments before the first section after NAME (copyright, licence, history), unmarked."""
    notice: list[str] = []
    for line in source.splitlines():
        if re.match(r"^[.'][ \t]*SH\b", line) and not re.match(r"^[.'][ \t]*SH\s+\"?NAME", line):
            break
        m = re.match(r"^(?:[.'][ \t]*)?\\\"(.*)$", line)
        if m:
            notice.append(m.group(1)[1:] if m.group(1).startswith(" ") else m.group(1))
    if notice and re.fullmatch(r"\s*[eprtv]+\s*", notice[0]):  # '\" t: a preprocessor hint, not text
        notice.pop(0)
    text = "\n".join(s.rstrip() for s in notice)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


# --------------------------------------------------------------------------------------------
# Rendering and reading the rendered text
# --------------------------------------------------------------------------------------------


def find_renderer(choice: str = "auto") -> str:
    """``groff`` or ``mandoc``: the one asked for, or (``auto``) the first installed."""
    for name in RENDERERS if choice == "auto" else (choice,):
        if shutil.which(name):
            return name
    raise SeDRInputError(
        f"no man page renderer found ({choice}): install groff (`apt-get install groff-base`) or mandoc"
    )


def renderer_version(renderer: str) -> str:
    flag = "--version" if renderer == "groff" else "-V"
    res = subprocess.run([renderer, flag], capture_output=True, text=True, check=False)
    first = (res.stdout or res.stderr).strip().splitlines()
    return first[0] if first else renderer


def render(source: str, renderer: str, cwd: Path) -> str:
    """The page as the terminal device prints it, in plain characters (``cwd``: where ``.so`` paths start)."""
    env = {**os.environ, "GROFF_NO_SGR": "1", "LC_ALL": "C.UTF-8"}
    res = subprocess.run(
        RENDERERS[renderer],
        input=source.encode("utf-8"),
        capture_output=True,
        env=env,
        cwd=cwd if cwd.is_dir() else None,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"{renderer} failed ({res.returncode}): {res.stderr.decode(errors='replace')[:500]}"
        )
    text = _OVERSTRIKE_RE.sub("", _SGR_RE.sub("", res.stdout.decode("utf-8", errors="replace"))).translate(
        _ASCII
    )
    return "\n".join(drop_table_rules(text.split("\n")))


def drop_table_rules(lines: list[str]) -> list[str]:
    """``lines`` without the horizontal and vertical rules of tables (see :data:`_RULE_RE`)."""
    lines = [ln for ln in lines if not _RULE_RE.match(ln)]

    def is_rule(i: int, j: int) -> bool:
        return lines[i].count(_VBAR) > 1 or any(
            0 <= k < len(lines) and lines[k][j : j + 1] == _VBAR for k in (i - 1, i + 1)
        )

    return [
        "".join(" " if c == _VBAR and is_rule(i, j) else c for j, c in enumerate(ln)) if _VBAR in ln else ln
        for i, ln in enumerate(lines)
    ]


def rendered_sections(text: str) -> list[tuple[str, list[str]]]:
    """``[(HEADING, lines)]``: headings at column 0, lines stripped, blank lines dropped.

    The first non-blank line is the page's header (``rename(2)  System Calls Manual  rename(2)``), the
    last one its footer when it ends with the same title (``Linux man-pages 6.03  2023-02-05  rename(2)``).
    """
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    title = lines[0].split()[-1] if lines else ""
    end = -1 if len(lines) > 1 and lines[-1].endswith(title) else len(lines)
    sections: list[tuple[str, list[str]]] = []
    for line in lines[1:end]:
        if not line[0].isspace() and _HEADING_RE.match(line):
            sections.append((line.strip(), []))
        elif sections:
            sections[-1][1].append(normalize_space(line))
    return sections


def split_name_line(lines: Sequence[str]) -> tuple[list[str], str] | None:
    """``(names, description)`` of a NAME section (``rename, renameat - change ...``), None if malformed."""
    text = normalize_space(" ".join(lines))
    m = _NAME_SPLIT_RE.search(text)
    if not m:
        return None
    names = [n.strip() for n in text[: m.start()].split(",") if n.strip()]
    description = text[m.end() :].strip()
    if not names or not description:
        return None
    return names, description


def see_also_refs(lines: Sequence[str] | None) -> list[tuple[str, str]]:
    """``[(name, section), ...]`` named in a SEE ALSO section, in order, without repeats."""
    refs: list[tuple[str, str]] = []
    for m in _REF_RE.finditer(" ".join(lines or ())):
        ref = (m.group(1), m.group(2))
        if ref not in refs:
            refs.append(ref)
    return refs


def page_from_text(name: str, section: str, text: str, notice: str = "") -> Page | None:
    """A :class:`Page` from rendered text; None without a well-formed NAME line."""
    sections = rendered_sections(text)
    headings = dict(sections)
    parsed = split_name_line(headings["NAME"]) if "NAME" in headings else None
    if parsed is None:
        return None
    names, description = parsed
    body: list[str] = []
    for heading, lines in sections:
        if heading != "NAME":
            body += [heading, *lines]
    return Page(
        name=name,
        section=section,
        names=tuple(names),
        description=description,
        body="\n".join(body),
        see_also=tuple(see_also_refs(headings.get("SEE ALSO"))),
        notice=notice,
    )


def build_collection(
    source: str | Path = "/",
    seed: int = DEFAULT_SEED,
    renderer: str = "auto",
    only: Sequence[str] | None = None,
) -> Collection:
    """Render the packages' pages and build the collection (``only``: file names such as ``rename.2``)."""
    root = Path(source)
    renderer = find_renderer(renderer)
    files = man_files(root)
    if only:
        wanted = {n.removesuffix(".gz") for n in only}
        files = [p for p in files if p.name.removesuffix(".gz") in wanted]
        missing = wanted - {p.name.removesuffix(".gz") for p in files}
        if missing:
            raise MissingInputError(
                ", ".join(sorted(missing)), f"not among the man files of {', '.join(PACKAGES)}"
            )
    pages: list[Page] = []
    link_targets: list[tuple[tuple[str, str], Path]] = []
    skipped: Counter = Counter()
    for path in files:
        ident = identity(path)
        if path.is_symlink():
            link_targets.append((ident, path.resolve()))
            skipped["symlink"] += 1
            continue
        src = read_man_file(path)
        target = so_target(src)
        if target is not None:
            found = resolve_so(root, target)
            if found is not None:
                link_targets.append((ident, found.resolve()))
            skipped[".so stub"] += 1
            continue
        page = page_from_text(
            *ident, render(src, renderer, root / "usr/share/man"), leading_comment_block(src)
        )
        if page is None:
            skipped["no NAME line"] += 1
            continue
        pages.append(page)
    url_of = {path.resolve(): "man:{}({})".format(*identity(path)) for path in files if not path.is_symlink()}
    aliases = {ident: url_of[target] for ident, target in link_targets if target in url_of}
    logger.info("%d man files: %d pages rendered, skipped %s", len(files), len(pages), dict(skipped))
    version = renderer_version(renderer)
    header = {
        "licence": LICENCE_NOTE.format(renderer=version),
        "source": {
            "packages": package_versions(root),
            "upstream": "Linux man-pages",
            "files": len(files),
            "pages_parsed": len(pages),
            "skipped": dict(sorted(skipped.items())),
            "renderer": version,
        },
    }
    return collection_from_pages(pages, aliases, header, seed)


@exit_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/build_manpage_snapshot.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", required=True, help="snapshot file to write (.jsonl.gz)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--source",
        default="/",
        help="'/' (installed packages, via dpkg -L) or a folder made by `dpkg-deb -x` of both .debs",
    )
    parser.add_argument(
        "--renderer",
        default="auto",
        choices=["auto", *RENDERERS],
        help="auto: groff if installed, else mandoc",
    )
    parser.add_argument(
        "--pages",
        nargs="+",
        metavar="FILE",
        help="only these man files (e.g. rename.2 link.2): a quick check, not a full snapshot",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the split assignment")
    args = parser.parse_args(argv)
    setup_logging()
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SeDRInputError(f"{out} exists; pass --overwrite to replace it")
    collection = build_collection(args.source, seed=args.seed, renderer=args.renderer, only=args.pages)
    write_snapshot(collection, out)
    licence = Path(args.source) / "usr/share/doc/manpages/copyright"
    print(
        f"wrote {out} ({out.stat().st_size:,} bytes); keep {LICENSE_FILE} beside it "
        f"(its licence texts are Debian's {licence})"
    )
    print(format_stats(collection))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

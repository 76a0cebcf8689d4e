"""tools/build_manpage_snapshot.py: reading rendered man pages, and (with groff) whole builds.

The reading is checked on hand-written rendered text; the builds run the system's groff on a
``dpkg-deb -x`` style folder and, where Debian's pages of the shipped snapshot's versions are
installed, on five real pages compared with the shipped snapshot.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from SeDR.demo import collection as mc

ROOT = Path(__file__).resolve().parents[1]
HAS_GROFF = shutil.which("groff") is not None


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "build_manpage_snapshot", ROOT / "tools" / "build_manpage_snapshot.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

RENDERED = """\
foo(2)                      System Calls Manual                      foo(2)



NAME
       foo, bar - frobnicate a widget

SYNOPSIS
       #include <foo.h>

       int foo(int fd, const char *path);

DESCRIPTION
       foo() frobnicates the widget named by path, "really".

   Table
       \u250c\u2500\u2500\u2500\u2500\u2500\u2500\u252c\u2500\u2500\u2500\u2500\u2500\u2500\u2500\u2510
       \u2502Name  \u2502 Value \u2502
       \u251c\u2500\u2500\u2500\u2500\u2500\u2500\u253c\u2500\u2500\u2500\u2500\u2500\u2500\u2500\u2524
       \u2502alpha \u2502 42    \u2502
       \u2514\u2500\u2500\u2500\u2500\u2500\u2500\u2534\u2500\u2500\u2500\u2500\u2500\u2500\u2500\u2518

       129    \u2502  BOX DRAWINGS LIGHT VERTICAL

SEE ALSO
       bar(2), baz(7), missing(1), bar(2)



Linux man-pages 6.03              2024-01-01                       foo(2)
"""


def test_page_from_rendered_text():
    text = "\n".join(tool.drop_table_rules(RENDERED.split("\n")))
    page = tool.page_from_text("foo", "2", text, notice="n")
    assert page.names == ("foo", "bar") and page.description == "frobnicate a widget"
    assert page.url == "man:foo(2)" and page.notice == "n"
    # header and footer dropped, the NAME section moved out of the body, a table's rules removed,
    # the lone box-drawing character kept (it is the text of a character-set table)
    assert page.body.split("\n") == [
        "SYNOPSIS",
        "#include <foo.h>",
        "int foo(int fd, const char *path);",
        "DESCRIPTION",
        'foo() frobnicates the widget named by path, "really".',
        "Table",
        "Name Value",
        "alpha 42",
        "129 \u2502 BOX DRAWINGS LIGHT VERTICAL",
        "SEE ALSO",
        "bar(2), baz(7), missing(1), bar(2)",
    ]
    assert page.see_also == (("bar", "2"), ("baz", "7"), ("missing", "1"))
    assert (
        tool.page_from_text("x", "2", "x(2)   M   x(2)\nDESCRIPTION\n       no name line\nfooter x(2)\n")
        is None
    )


@pytest.mark.parametrize(
    "lines, expected",
    [
        (
            ["rename, renameat, renameat2 - change the name or location of a file"],
            (["rename", "renameat", "renameat2"], "change the name or location of a file"),
        ),
        (["iso_8859-1 - ISO 8859-1 character set"], (["iso_8859-1"], "ISO 8859-1 character set")),
        (["foo", "- multi line", "description"], (["foo"], "multi line description")),
        (["foo \u2212 a minus sign"], (["foo"], "a minus sign")),
        (["no separator here"], None),
    ],
)
def test_split_name_line(lines, expected):
    assert tool.split_name_line(lines) == expected


SOURCE_HEAD = r"""'\" t
.\" Copyright (C) 2024 A. Author
.\"
.\" SPDX-License-Identifier: Linux-man-pages-copyleft
.TH foo 2 2024-01-01 "Linux man-pages 6.03"
.SH NAME
"""


def test_notice_and_so_stubs_come_from_the_source():
    assert tool.leading_comment_block(SOURCE_HEAD + 'foo \\- x\n.SH DESCRIPTION\n.\\" not a notice\n') == (
        "Copyright (C) 2024 A. Author\n\nSPDX-License-Identifier: Linux-man-pages-copyleft"
    )
    assert tool.so_target('.\\" Link for old name\n.so man2/rename.2\n') == "man2/rename.2"
    assert tool.so_target(SOURCE_HEAD + "foo \\- x\n.so man2/rename.2\n") is None


# --------------------------------------------------------------------------------------------
# Builds with the system's groff
# --------------------------------------------------------------------------------------------

needs_groff = pytest.mark.skipif(not HAS_GROFF, reason="groff is not installed")


def _man(root: Path, rel: str, roff: str) -> Path:
    path = root / "usr/share/man" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(roff.encode()))
    return path


def _roff(name, section, names_desc, see_also=""):
    return f".TH {name} {section}\n.SH NAME\n{names_desc}\n.SH DESCRIPTION\nText of {name}.\n" + (
        f".SH SEE ALSO\n{see_also}\n" if see_also else ""
    )


@pytest.fixture(scope="module")
def extracted_root(tmp_path_factory):
    """A ``dpkg-deb -x`` style folder: four documents, a symlink, a .so stub,
    two pages sharing a description."""
    root = tmp_path_factory.mktemp("debroot")
    see = "\n".join(
        [
            ".BR beta_alias (2),",
            ".BR epsilon (3),",
            ".BR delta (7),",
            ".BR dup1 (5),",
            ".BR alpha (2),",
            ".BR nothere (1)",
        ]
    )
    _man(
        root,
        "man2/alpha.2.gz",
        SOURCE_HEAD.replace(".TH foo 2", ".TH alpha 2")
        + "alpha \\- first letter\n"
        + ".SH DESCRIPTION\nText of alpha.\n.TS\nallbox;\nl l.\nName\tValue\n.TE\n.SH SEE ALSO\n"
        + see
        + "\n",
    )
    _man(root, "man2/beta.2.gz", _roff("beta", 2, r"beta \- second letter"))
    (root / "usr/share/man/man2/beta_alias.2.gz").symlink_to("beta.2.gz")
    _man(root, "man3/gamma.3.gz", _roff("gamma", 3, r"gamma, epsilon \- third letter"))
    _man(root, "man3/gamma_old.3.gz", ".so man3/gamma.3\n")
    _man(root, "man7/delta.7.gz", _roff("delta", 7, r"delta \- fourth letter", ".BR gamma_old (3)"))
    _man(root, "man5/dup1.5.gz", _roff("dup1", 5, r"dup1 \- same description"))
    _man(root, "man5/dup2.5.gz", _roff("dup2", 5, r"dup2 \- Same description."))
    for pkg in tool.PACKAGES:
        doc = root / "usr/share/doc" / pkg
        doc.mkdir(parents=True)
        (doc / "changelog.Debian.gz").write_bytes(
            gzip.compress(b"manpages (9.9-1) unstable; urgency=medium\n")
        )
    return root


@needs_groff
def test_build_from_extracted_folder(extracted_root, tmp_path):
    col = tool.build_collection(extracted_root, renderer="groff")
    by_url = {d.url: d for d in col.documents}
    assert [(d.docid, d.url) for d in col.documents] == [
        ("D1", "man:alpha(2)"),
        ("D2", "man:beta(2)"),
        ("D3", "man:gamma(3)"),
        ("D4", "man:delta(7)"),
    ]
    alpha = by_url["man:alpha(2)"]
    # symlink alias, NAME-line alias and plain reference resolve; self, excluded and unknown pages do not
    assert alpha.see_also == (2, 3, 4)
    assert by_url["man:delta(7)"].see_also == (3,)  # through the .so stub
    assert (alpha.title, alpha.query) == ("alpha", "first letter")
    assert alpha.notice == "Copyright (C) 2024 A. Author\n\nSPDX-License-Identifier: Linux-man-pages-copyleft"
    assert by_url["man:gamma(3)"].title == "gamma, epsilon"
    assert col.header["source"]["packages"] == {"manpages": "9.9-1", "manpages-dev": "9.9-1"}
    assert col.header["source"]["skipped"] == {".so stub": 1, "symlink": 1}
    assert col.header["source"]["renderer"].startswith("GNU groff") and "groff" in col.header["licence"]
    mc.write_msmarco_files(col, tmp_path)
    assert (tmp_path / mc.CORPUS_FILE).read_text().split("\n")[0] == (
        "D1\tman:alpha(2)\talpha\tDESCRIPTION Text of alpha. Name Value SEE ALSO beta_alias(2), epsilon(3), "
        "delta(7), dup1(5), alpha(2), nothere(1)"
    )


FEW_PAGES = ("rename.2", "unlink.2", "chmod.2", "rmdir.2", "mkdir.2")


def _system_pages_match_snapshot() -> bool:
    if not HAS_GROFF or tool.dpkg_file_list() is None:
        return False
    return tool.package_versions(Path("/")) == mc.load_snapshot().header["source"]["packages"]


@pytest.mark.skipif(
    not _system_pages_match_snapshot(),
    reason="groff or Debian's manpages/manpages-dev of the shipped snapshot's versions missing",
)
def test_five_system_pages_agree_with_the_shipped_snapshot(tmp_path, capsys):
    out = tmp_path / "few.jsonl.gz"
    assert tool.main(["--out", str(out), "--renderer", "groff", "--pages", *FEW_PAGES]) == 0
    built = {d.url: d for d in mc.load_snapshot(out).documents}
    shipped = {d.url: d for d in mc.load_snapshot().documents}
    assert set(built) == {"man:{}({})".format(*p.split(".")) for p in FEW_PAGES}
    url_of = {d.number: d.url for d in built.values()}
    shipped_url_of = {d.number: d.url for d in shipped.values()}
    for url, d in built.items():
        s = shipped[url]
        assert (d.title, d.query, d.notice) == (s.title, s.query, s.notice)
        assert d.body.split() == s.body.split()  # the same words; only the line breaks differ
        assert {url_of[t] for t in d.see_also} == {shipped_url_of[t] for t in s.see_also} & set(built)
    # an existing file is never replaced without --overwrite
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exc:
        tool.main(["--out", str(out), "--pages", FEW_PAGES[0]])
    assert exc.value.code == 2 and out.read_bytes() == before
    assert "exists; pass --overwrite" in capsys.readouterr().err

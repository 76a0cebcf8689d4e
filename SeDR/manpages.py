"""A real long-document collection, built offline from the Linux man-pages (the apropos task).

Debian's ``manpages`` and ``manpages-dev`` packages ship the Linux man-pages project (system
calls, libc functions, file formats, overviews). Every page whose NAME line has a description
no other page shares becomes a document; that description is its query:

* document: url ``man:NAME(SECTION)``, title the page's names (``rename, renameat, renameat2``),
  body the rest of the page as plain text (the NAME section, hence the description, removed);
* query: the description (``change the name or location of a file``);
* labels: the page itself (binary ``1`` for train/dev, ``3`` for the TREC-style test splits) and,
  for the test splits only, the pages its SEE ALSO section names (``1``), like TREC-DL's graded qrels.

The collection is written in the MS MARCO Document + TREC-DL file formats of SPEC §1.1, so every
README command runs on it unchanged. Roff is parsed here, in Python (a small interpreter for the
``man`` macros, ``tbl`` tables, strings, conditionals and user macros), so no ``groff`` is needed.

A frozen snapshot (``SeDR/demo_data/manpages.jsonl.gz``, one JSON header line with the package
versions and the licence note, then one line per document) makes the demo deterministic where
man pages are absent; ``python -m SeDR.manpages --rebuild-snapshot`` regenerates it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import os
import re
import statistics
import subprocess
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from SeDR.constants import CORPUS_FILE, SPLIT_FILES
from SeDR.errors import DataFormatError, MissingInputError, exit_on_input_error

logger = logging.getLogger(__name__)

PACKAGES = ("manpages", "manpages-dev")
DEMO_DATA_DIR = Path(__file__).resolve().parent / "demo_data"
SNAPSHOT_PATH = DEMO_DATA_DIR / "manpages.jsonl.gz"
LICENSE_FILE = "LICENSE-manpages.txt"
SNAPSHOT_FORMAT = "sedr-manpages-snapshot"
SNAPSHOT_FORMAT_VERSION = 1
HOW_TO_GET = ("install Debian's man pages (`apt-get install manpages manpages-dev`), or run "
              "`apt-get download manpages manpages-dev` and `dpkg-deb -x FILE.deb DIR` for both files "
              "and pass --source DIR")

# Splits (SPEC §1.1 file names via constants.SPLIT_FILES). Documents are ordered by a seeded hash
# of their url (so a page keeps its split when other pages come or go); the first DEV_QUERIES
# queries are dev, the next TEST_QUERIES the TREC-style test queries (first half "test" = the
# 2019 files, second half "2020test" = the 2020 files), the rest train.
DEFAULT_SEED = 2022
DEV_QUERIES = 150
TEST_QUERIES = 150
# Graded labels of the TREC-style splits, as TREC-DL's 0..3 scale: own page, SEE ALSO targets.
REL_OWN = 3
REL_SEE_ALSO = 1
REL_BINARY = 1
TREC_SPLITS = ("test", "2020test")
# qid = QID_BASE + document number, so query 100042 asks for D42 (distinct from doc numbers on purpose).
QID_BASE = 100_000

LICENCE_NOTE = (
    "Text derived from the Linux man-pages project as packaged by Debian (manpages, manpages-dev), "
    "converted from roff to plain text. Each page keeps its own free licence (Linux-man-pages-copyleft, "
    "GPL-2+, GPL-1+, GPL-2, BSD-2/3/4-clause, Expat); each record's 'notice' field holds the page's "
    "copyright notice and licence identifier, and LICENSE-manpages.txt (Debian's copyright file) "
    "holds the licence texts. Modification: roff markup removed (text otherwise unchanged), the NAME "
    "description moved from the body to the query, by SeDR/manpages.py."
)

# --------------------------------------------------------------------------------------------
# Roff to plain text
# --------------------------------------------------------------------------------------------

# groff special characters that occur in man pages, as plain text (unknown ones are dropped).
SPECIAL_CHARS = {
    "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'", "ga": "`", "aa": "'", "ha": "^",
    "ti": "~", "rs": "\\", "sl": "/", "em": "\u2014", "en": "\u2013", "hy": "-", "mi": "-", "pl": "+",
    "eq": "=", "bu": "\u2022", "sc": "\u00a7", "mc": "\u00b5", "dg": "\u2020", "de": "\u00b0",
    "fm": "\u2032", "sd": "\u2033", "+-": "\u00b1", "la": "\u27e8", "ra": "\u27e9", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "mu": "\u00d7", "di": "\u00f7", "<=": "\u2264", ">=": "\u2265",
    "!=": "\u2260", "==": "\u2261", "->": "\u2192", "<-": "\u2190", "12": "\u00bd", "14": "\u00bc",
    "34": "\u00be", "ps": "\u00b6", "ct": "\u00a2", "Po": "\u00a3", "Eu": "\u20ac", "Ye": "\u00a5",
    "pc": "\u00b7", "ba": "|", "br": "|", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "at": "@",
    "sh": "#", "Do": "$", "ul": "_", "ss": "\u00df", "ae": "\u00e6", "AE": "\u00c6", "o/": "\u00f8",
    "O/": "\u00d8", "ao": "\u00e5", "AO": "\u00c5", "ff": "ff", "fi": "fi", "fl": "fl",
}
_ACCENTS = {":": "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", ",": "\u0327",
            "o": "\u030a"}
# Strings predefined by groff's man macros (an.tmac).
DEFAULT_STRINGS = {"lq": '"', "rq": '"', "R": "\u00ae", "Tm": "\u2122", "S": ""}
# Escapes whose argument is a delimited expression with no text of its own (motions, widths, drawing).
_DELIMITED_DROP = set("hvwlLDXbARBx")
# Escapes that take a one-character, (xx or [name] argument and print nothing (fonts, sizes, registers, colours).
_NAMED_DROP = set("fnmMFYVgk")
# One-character escapes that print nothing (zero-width, breaks, hyphenation marks, spacing hints).
_SILENT = set("&)|^%:/,!adpru{}z")
_SPACES = set(" ~0_")
_CONTINUE = "\x00"  # \c: the next input line continues this output line without a space
_MAX_MACRO_DEPTH = 10
_TEXT_MACROS = {"B", "I", "SM", "SB"}
_ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}


def _read_name(s: str, i: int) -> tuple[str, int]:
    """Read an escape's name argument at ``s[i]``: ``x``, ``(xx`` or ``[name]``; return (name, next index)."""
    if i >= len(s):
        return "", i
    if s[i] == "(":
        return s[i + 1:i + 3], i + 3
    if s[i] == "[":
        j = s.find("]", i)
        j = len(s) if j < 0 else j
        return s[i + 1:j], j + 1
    return s[i], i + 1


def _read_delimited(s: str, i: int) -> tuple[str, int]:
    """Read a ``'...'`` argument (any delimiter) at ``s[i]``; return (content, next index)."""
    if i >= len(s):
        return "", i
    delim = s[i]
    j = s.find(delim, i + 1)
    j = len(s) if j < 0 else j
    return s[i + 1:j], j + 1


def special_char(name: str) -> str:
    """Plain text of a groff special character ``\\(xx`` / ``\\[name]``; '' when unknown."""
    if name in SPECIAL_CHARS:
        return SPECIAL_CHARS[name]
    if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
        return chr(int(name[1:], 16))
    if len(name) == 2 and name[0] in _ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + _ACCENTS[name[0]])
    return ""


def find_comment(line: str) -> int:
    """Index of the first unescaped ``\\"`` or ``\\#`` comment escape, or -1."""
    i = 0
    while i < len(line) - 1:
        if line[i] == "\\":
            if line[i + 1] in '"#':
                return i
            i += 2
        else:
            i += 1
    return -1


def unescape(s: str, strings: dict[str, str] | None = None, _depth: int = 0) -> str:
    """Plain text of one roff input line: escapes resolved, fonts/sizes/motions removed.

    ``\\c`` at the end of a line becomes the :data:`_CONTINUE` marker (joins the next line).
    """
    strings = DEFAULT_STRINGS if strings is None else strings
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            break
        c = s[i + 1]
        i += 2
        if c in '"#':  # comment: the rest of the line is dropped
            break
        if c in "\\eE":
            out.append("\\")
        elif c in "-'`.":
            out.append({"-": "-", "'": "'", "`": "`", ".": "."}[c])
        elif c in _SPACES:
            out.append(" ")
        elif c == "t":
            out.append(" ")
        elif c == "c":
            if i >= n:
                out.append(_CONTINUE)
        elif c in _SILENT:
            pass
        elif c == "(" or c == "[":
            name, i = _read_name(s, i - 1)
            out.append(special_char(name))
        elif c == "C":
            name, i = _read_delimited(s, i)
            out.append(special_char(name))
        elif c == "N":
            num, i = _read_delimited(s, i)
            out.append(chr(int(num)) if num.isdigit() else "")
        elif c == "*":
            name, i = _read_name(s, i)
            name = name.split(" ")[0]
            if _depth < _MAX_MACRO_DEPTH:
                out.append(unescape(strings.get(name, ""), strings, _depth + 1))
        elif c == "s":  # \s+1 \s-1 \s0 \s12 \s(12 \s[12] \s'12'
            if i < n and s[i] in "+-":
                i += 1
            if i < n and s[i] == "'":
                _, i = _read_delimited(s, i)
            elif i < n and s[i] in "([":
                _, i = _read_name(s, i)
            elif i < n and s[i].isdigit():
                # groff reads two digits when the first is 1-3 and a digit follows (\s10 .. \s39)
                i += 2 if s[i] in "123" and i + 1 < n and s[i + 1].isdigit() else 1
        elif c in _NAMED_DROP:
            if c == "n" and i < n and s[i] in "+-":
                i += 1
            _, i = _read_name(s, i)
        elif c in _DELIMITED_DROP:
            _, i = _read_delimited(s, i)
        elif c in "oZ":  # overstrike / zero-width: keep the text
            inner, i = _read_delimited(s, i)
            out.append(unescape(inner, strings, _depth + 1))
        elif c == "$":  # macro argument outside a macro
            _, i = _read_name(s, i)
        else:
            out.append(c)
    return "".join(out)


def split_args(s: str) -> list[str]:
    """Split a request's arguments like roff: spaces separate, ``"..."`` quotes, ``""`` inside quotes is ``"``."""
    args: list[str] = []
    i, n = 0, len(s)
    while i < n:
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            break
        if s[i] == '"':
            i += 1
            buf = []
            while i < n:
                if s[i] == '"':
                    if i + 1 < n and s[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                if s[i] == "\\" and i + 1 < n:
                    buf.append(s[i:i + 2])
                    i += 2
                    continue
                buf.append(s[i])
                i += 1
            args.append("".join(buf))
        else:
            j = i
            while j < n and s[j] not in " \t":
                j += 2 if s[j] == "\\" else 1
            args.append(s[i:j])
            i = j
    return args


def join_continuations(text: str) -> list[str]:
    """Input lines with escaped newlines (a line ending in an odd number of backslashes) joined."""
    lines: list[str] = []
    buf = ""
    for raw in text.split("\n"):
        line = buf + raw
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            buf = line[:-1]
            continue
        buf = ""
        lines.append(line)
    if buf:
        lines.append(buf)
    return lines


@dataclass
class RoffPage:
    """A man page as plain text: ``.TH`` name/section, sections in order, the leading comment block."""

    th_name: str = ""
    th_section: str = ""
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    notice: str = ""
    redirect: str | None = None  # target of a one-line ``.so`` stub

    def section(self, heading: str) -> list[str] | None:
        for h, lines in self.sections:
            if h.upper() == heading:
                return lines
        return None


class _RoffInterpreter:
    """Just enough of troff + the man macros to recover a page's text (SPEC-free; see module docstring)."""

    def __init__(self):
        self.strings = dict(DEFAULT_STRINGS)
        self.macros: dict[str, list[str]] = {}
        self.page = RoffPage()
        self.current: list[str] = []  # lines before the first .SH go to a discarded preamble
        self.ie_stack: list[bool] = []
        self.pending_url: str | None = None

    # ---- output
    def emit(self, text: str) -> None:
        text = text.replace("\t", " ")
        if self.current and self.current[-1].endswith(_CONTINUE):
            self.current[-1] = self.current[-1][:-1] + text.lstrip()
            return
        if text.replace(_CONTINUE, "").strip():
            self.current.append(text.rstrip() if not text.endswith(_CONTINUE) else text)

    def text(self, raw: str) -> str:
        return unescape(raw, self.strings)

    # ---- main loop
    def run(self, lines: Sequence[str], depth: int = 0) -> None:
        i = 0
        while i < len(lines):
            i = self.line(lines, i, depth)

    def line(self, lines: Sequence[str], i: int, depth: int) -> int:
        """Process ``lines[i]`` (and any lines it consumes); return the index of the next line."""
        line = lines[i]
        if not line.startswith((".", "'")):
            self.emit(self.text(line))
            return i + 1
        body = line[1:].lstrip(" \t")
        cut = find_comment(body)
        if cut == 0:
            return i + 1
        if cut > 0:
            body = body[:cut]
        m = re.match(r"(\S+)\s*(.*)$", body)
        if not m:
            return i + 1
        name, rest = m.group(1), m.group(2)
        return self.request(name, rest, lines, i, depth)

    def request(self, name: str, rest: str, lines: Sequence[str], i: int, depth: int) -> int:
        args = split_args(rest)
        nxt = i + 1
        if name in ("SH", "SS"):
            if args:
                heading = " ".join(self.text(a) for a in args).strip()
            else:  # the heading is the next input line
                heading = self.text(lines[nxt]).strip() if nxt < len(lines) else ""
                nxt += 1
            if name == "SH":
                self.current = []
                self.page.sections.append((heading.upper(), self.current))
            else:
                self.emit(heading)
        elif name == "TH":
            self.page.th_name = self.text(args[0]) if args else ""
            self.page.th_section = self.text(args[1]) if len(args) > 1 else ""
        elif name in _TEXT_MACROS or name == "SY":
            if args:
                self.emit(" ".join(self.text(a) for a in args))
        elif name in _ALTERNATING:
            self.emit("".join(self.text(a) for a in args))
        elif name == "OP":
            self.emit("[" + " ".join(self.text(a) for a in args) + "]")
        elif name == "IP" and args:  # the tag (a bullet, an option name)
            self.emit(self.text(args[0]))
        elif name in ("UR", "MT"):
            self.pending_url = self.text(args[0]) if args else None
        elif name in ("UE", "ME"):
            tail = "".join(self.text(a) for a in args)
            if self.pending_url:
                self.emit(f"<{self.pending_url}>{tail}")
            elif tail:
                self.emit(tail)
            self.pending_url = None
        elif name in ("de", "de1", "am"):
            end = args[1] if len(args) > 1 else "."
            body, nxt = [], i + 1
            while nxt < len(lines) and lines[nxt].strip() not in (f".{end}", f"'{end}"):
                body.append(lines[nxt])
                nxt += 1
            nxt += 1
            if args:
                self.macros[args[0]] = (self.macros.get(args[0], []) if name == "am" else []) + body
        elif name == "ig":
            end = args[0] if args else "."
            while nxt < len(lines) and lines[nxt].strip() != f".{end}":
                nxt += 1
            nxt += 1
        elif name in ("ds", "ds1", "as"):
            key, _, value = rest.partition(" ")
            value = value.lstrip(" ")
            if value.startswith('"'):
                value = value[1:]
            self.strings[key] = (self.strings.get(key, "") if name == "as" else "") + value
        elif name in ("if", "ie", "el"):
            nxt = self.conditional(name, rest, lines, i, depth)
        elif name == "TS":
            nxt = self.table(lines, i + 1, depth)
        elif name in self.macros and depth < _MAX_MACRO_DEPTH:
            self.run(expand_macro(self.macros[name], args), depth + 1)
        # everything else (PP, TP, TQ, RS, RE, br, sp, in, nf, fi, ad, PD, EX, EE, ft, so, nr, ...) is layout
        return nxt

    # ---- conditionals
    def condition(self, rest: str) -> tuple[bool, str]:
        """Evaluate a condition at the start of ``rest``; return (value, the remaining input)."""
        negate = rest.startswith("!")
        if negate:
            rest = rest[1:]
        value = False
        if rest[:1] in ("n", "t", "o", "e", "v") and (len(rest) == 1 or rest[1] in " \t\\"):
            value, rest = rest[0] in "ne", rest[1:]  # we format like nroff
        elif rest.startswith(("c", "d", "r", "m", "F", "S")) and len(rest) > 1 and rest[1] in " \t":
            parts = rest[2:].lstrip().split(None, 1)
            what = parts[0] if parts else ""
            value = {"d": what in self.strings or what in self.macros, "r": False}.get(rest[0], True)
            rest = parts[1] if len(parts) > 1 else ""
        elif rest[:1] and not rest[0].isalnum() and rest[0] not in "\\(":
            delim = rest[0]
            a_end = rest.find(delim, 1)
            b_end = rest.find(delim, a_end + 1) if a_end >= 0 else -1
            if b_end < 0:
                return False, ""
            value = self.text(rest[1:a_end]) == self.text(rest[a_end + 1:b_end])
            rest = rest[b_end + 1:]
        else:  # numeric expression: \n(.g (groff) is true, other registers are 0
            m = re.match(r"(\\n\(\.g|\\n\[\.g\]|[-+0-9.()<>=&:*/\\a-zA-Z\[\]]+)(.*)$", rest)
            expr, rest = (m.group(1), m.group(2)) if m else (rest, "")
            if expr in ("\\n(.g", "\\n[.g]"):
                value = True
            else:
                try:
                    value = float(re.sub(r"[^0-9.]", "", expr) or 0) > 0
                except ValueError:
                    value = False
        return value != negate, rest

    def conditional(self, name: str, rest: str, lines: Sequence[str], i: int, depth: int) -> int:
        if name == "el":
            value = self.ie_stack.pop() if self.ie_stack else False
        else:
            value, rest = self.condition(rest)
            if name == "ie":
                self.ie_stack.append(not value)
        rest = rest.lstrip(" \t")
        nxt = i + 1
        if rest.startswith("\\{"):
            rest = rest[2:].lstrip(" \t")
            if not value:  # skip to the matching \}
                level = 1 + rest.count("\\{") - rest.count("\\}")
                while level > 0 and nxt < len(lines):
                    level += lines[nxt].count("\\{") - lines[nxt].count("\\}")
                    nxt += 1
                return nxt
        if value and rest:
            self.line([rest], 0, depth + 1)
        return nxt

    # ---- tbl
    def table(self, lines: Sequence[str], i: int, depth: int) -> int:
        """Text of a ``.TS``/``.TE`` table: options and format lines skipped, cells joined by spaces."""
        tab = "\t"
        in_format = True
        while i < len(lines):
            line = lines[i]
            i += 1
            stripped = line.strip()
            if stripped in (".TE", "'TE"):
                break
            if stripped == ".T&":
                in_format = True
                continue
            if in_format:
                if stripped.endswith(";"):  # options line
                    m = re.search(r"tab\s*\((.)\)", stripped)
                    tab = m.group(1) if m else tab
                elif stripped.endswith("."):
                    in_format = False
                continue
            if line.startswith((".", "'")):
                self.line([line], 0, depth + 1)
                continue
            cells = [c for c in line.split(tab) if c.strip() not in ("_", "=", "\\_", "T{", "T}")]
            cells = [re.sub(r"^T\}|T\{$", "", c) for c in cells]
            self.emit(" ".join(self.text(c) for c in cells if c.strip()))
        return i


def expand_macro(body: Sequence[str], args: Sequence[str]) -> list[str]:
    """A user macro's body with ``\\$1``..``\\$9``, ``\\$*``, ``\\$@`` substituted (copy mode: ``\\\\`` -> ``\\``)."""

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key in "*@":
            return " ".join(args)
        k = int(key)
        return args[k - 1] if 0 < k <= len(args) else ""

    return [re.sub(r"\\\\\$([1-9*@])", sub, line).replace("\\\\", "\\") for line in body]


def leading_comment_block(lines: Sequence[str]) -> str:
    """The full-line comments before the first section after NAME (copyright, licence, history), unmarked.

    Kept verbatim in every snapshot record because the pages' licences require their notices be kept.
    """
    notice: list[str] = []
    for line in lines:
        if re.match(r"^[.'][ \t]*SH\b", line) and not re.match(r"^[.'][ \t]*SH\s+\"?NAME", line):
            break
        m = re.match(r"^(?:[.'][ \t]*)?\\\"(.*)$", line)
        if m:
            notice.append(m.group(1)[1:] if m.group(1).startswith(" ") else m.group(1))
    if notice and re.fullmatch(r"\s*[eprtv]+\s*", notice[0]):  # '\" t: a preprocessor hint, not text
        notice.pop(0)
    text = "\n".join(s.rstrip() for s in notice)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def parse_roff(source: str) -> RoffPage:
    """Parse one man page's roff source into plain-text sections (no external program)."""
    lines = join_continuations(source.replace("\r\n", "\n"))
    content = [ln for ln in lines if ln.strip() and not re.match(r"^[.'][ \t]*\\\"", ln)]
    if len(content) == 1 and re.match(r"^\.so\s+\S", content[0]):
        return RoffPage(redirect=content[0].split(None, 1)[1].strip(), notice=leading_comment_block(lines))
    interp = _RoffInterpreter()
    interp.run(lines)
    page = interp.page
    page.notice = leading_comment_block(lines)
    for idx, (heading, sec_lines) in enumerate(page.sections):
        page.sections[idx] = (heading, [ln.replace(_CONTINUE, "") for ln in sec_lines])
    return page


def roff_to_text(source: str) -> str:
    """The whole page as plain text: section headings and their lines, one output line each."""
    page = parse_roff(source)
    out = []
    for heading, lines in page.sections:
        out.append(heading)
        out.extend(lines)
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Pages, NAME lines and SEE ALSO references
# --------------------------------------------------------------------------------------------

_FILE_RE = re.compile(r"^(?P<name>.+)\.(?P<section>\d[a-z]*)(?:\.gz)?$")
# name(section) references: "rename(2)", "sysexits.h(3head)", "pthread_create(3)".
_REF_RE = re.compile(r"(?<![\w.+:-])([A-Za-z_][\w.+:-]*?)\s?\((\d[a-z]*)\)")
_NAME_SPLIT_RE = re.compile(r"\s+[-\u2013\u2014]+\s+|\s+-(?=\S)|(?<=\S)-\s+")


def normalize_space(text: str) -> str:
    """Collapse every run of whitespace (tabs and newlines included) to one space."""
    return " ".join(text.split())


def split_name_line(lines: Sequence[str]) -> tuple[list[str], str] | None:
    """``(names, description)`` of a NAME section (``rename, renameat \\- change ...``), None if malformed."""
    text = normalize_space(" ".join(lines))
    m = _NAME_SPLIT_RE.search(text)
    if not m:
        return None
    names = [n.strip() for n in text[:m.start()].split(",") if n.strip()]
    description = text[m.end():].strip()
    if not names or not description:
        return None
    return names, description


def see_also_refs(lines: Sequence[str] | None) -> list[tuple[str, str]]:
    """``[(name, section), ...]`` named in a SEE ALSO section, in order, without repeats."""
    if not lines:
        return []
    refs: list[tuple[str, str]] = []
    for m in _REF_RE.finditer(" ".join(lines)):
        ref = (m.group(1), m.group(2))
        if ref not in refs:
            refs.append(ref)
    return refs


def description_key(description: str) -> str:
    """Key under which two descriptions count as the same query (case, spacing, final period ignored)."""
    return normalize_space(description).casefold().rstrip(".")


@dataclass(frozen=True)
class Page:
    """One real man page after parsing: identity, NAME line, body and references."""

    name: str  # from the file name: rename
    section: str  # from the file name: 2, 3type, ...
    names: tuple[str, ...]
    description: str
    body: str
    see_also: tuple[tuple[str, str], ...]
    notice: str

    @property
    def url(self) -> str:
        return f"man:{self.name}({self.section})"


def page_from_source(name: str, section: str, source: str) -> Page | None:
    """A :class:`Page` from roff source; None for ``.so`` stubs and pages without a NAME line."""
    return page_from_roff(name, section, parse_roff(source))


def page_from_roff(name: str, section: str, rp: RoffPage) -> Page | None:
    if rp.redirect is not None:
        return None
    name_lines = rp.section("NAME")
    parsed = split_name_line(name_lines) if name_lines else None
    if parsed is None:
        return None
    names, description = parsed
    body_lines = []
    for heading, lines in rp.sections:
        if heading == "NAME":
            continue
        body_lines.append(heading)
        body_lines.extend(normalize_space(ln) for ln in lines if ln.strip())
    return Page(name=name, section=section, names=tuple(names), description=description,
                body="\n".join(body_lines), see_also=tuple(see_also_refs(rp.section("SEE ALSO"))),
                notice=rp.notice)


# --------------------------------------------------------------------------------------------
# Finding the packages' files
# --------------------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_man_file(path: Path) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return _decode(data)


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
                res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True,
                                     check=False)
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
    """The two packages' man files under ``root`` ("/" via dpkg's file lists, else a ``dpkg-deb -x`` folder)."""
    root = Path(root)
    files: list[Path] | None = None
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
    # only the English pages (translations live in /usr/share/man/<lang>/)
    files = [p for p in files if p.parent.parent.name == "man" and p.parent.name.startswith("man")]
    if not files:
        raise MissingInputError(root / "usr/share/man", HOW_TO_GET)
    return sorted(set(files), key=lambda p: (p.parent.name, p.name))


def _identity(path: Path) -> tuple[str, str]:
    m = _FILE_RE.match(path.name)
    assert m is not None, path
    return m.group("name"), m.group("section")


def _resolve_so(root: Path, target: str) -> Path | None:
    """The file a ``.so man2/foo.2`` stub points to (compressed or not)."""
    for candidate in (root / "usr/share/man" / target, root / "usr/share/man" / f"{target}.gz"):
        if candidate.exists():
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# The collection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One document with its query: the page's description (qid = QID_BASE + number)."""

    number: int
    url: str
    title: str
    body: str
    query: str
    split: str
    see_also: tuple[int, ...]  # numbers of documents named in SEE ALSO (own page excluded)
    notice: str

    @property
    def docid(self) -> str:
        return f"D{self.number}"

    @property
    def qid(self) -> int:
        return QID_BASE + self.number


@dataclass(frozen=True)
class Collection:
    header: dict
    documents: tuple[Document, ...]

    def split_documents(self, split: str) -> list[Document]:
        return [d for d in self.documents if d.split == split]

    def queries(self, split: str) -> list[tuple[int, str]]:
        return [(d.qid, d.query) for d in self.split_documents(split)]

    def qrels(self, split: str) -> list[tuple[int, str, int]]:
        """``[(qid, docid, rel)]``: own page (3 on TREC splits, else 1), SEE ALSO targets 1 on TREC splits."""
        out = []
        for d in self.split_documents(split):
            if split in TREC_SPLITS:
                out.append((d.qid, d.docid, REL_OWN))
                out.extend((d.qid, f"D{t}", REL_SEE_ALSO) for t in d.see_also)
            else:
                out.append((d.qid, d.docid, REL_BINARY))
        return out

    def stats(self) -> dict:
        words = [len(d.body.split()) + len(d.title.split()) for d in self.documents]
        return {
            "documents": len(self.documents),
            "queries": {s: len(self.split_documents(s)) for s in SPLIT_FILES},
            "qrels": {s: len(self.qrels(s)) for s in SPLIT_FILES},
            "words_per_document_mean": round(statistics.fmean(words), 1) if words else 0.0,
            "words_per_document_median": statistics.median(words) if words else 0,
            "fraction_over_400_words": round(sum(w > 400 for w in words) / max(len(words), 1), 4),
            "documents_with_see_also": sum(bool(d.see_also) for d in self.documents),
        }


def assign_splits(urls: Iterable[str], seed: int = DEFAULT_SEED, dev: int = DEV_QUERIES,
                  test: int = TEST_QUERIES) -> dict[str, str]:
    """``{url: split}``: urls ordered by sha256(seed, url); dev first, then test (2019 half, 2020 half), rest train."""
    order = sorted(urls, key=lambda u: hashlib.sha256(f"{seed}\t{u}".encode()).hexdigest())
    half = (test + 1) // 2
    splits = {}
    for k, url in enumerate(order):
        if k < dev:
            splits[url] = "dev"
        elif k < dev + half:
            splits[url] = "test"
        elif k < dev + test:
            splits[url] = "2020test"
        else:
            splits[url] = "train"
    return splits


def collection_from_pages(pages: Sequence[Page], aliases: dict[tuple[str, str], str] | None = None,
                          header: dict | None = None, seed: int = DEFAULT_SEED) -> Collection:
    """Keep pages with a unique description, number them, resolve SEE ALSO, assign splits.

    Args:
        pages: parsed pages (any order).
        aliases: extra ``(name, section) -> url`` entries (symlinks and ``.so`` stubs).
        header: snapshot header fields (package versions, ...).
    """
    counts = Counter(description_key(p.description) for p in pages)
    kept = sorted((p for p in pages if counts[description_key(p.description)] == 1),
                  key=lambda p: (p.section, p.name))
    number = {p.url: k + 1 for k, p in enumerate(kept)}
    # (name, section) -> url, and (name, leading digit) -> urls, for resolving SEE ALSO references.
    exact: dict[tuple[str, str], str] = {}
    by_digit: dict[tuple[str, str], set[str]] = defaultdict(set)
    all_pages = sorted(pages, key=lambda p: (p.section, p.name))
    entries = [((p.name, p.section), p.url) for p in all_pages]
    entries += sorted((aliases or {}).items())
    entries += [((n, p.section), p.url) for p in all_pages for n in p.names]
    for key, url in entries:
        exact.setdefault(key, url)
        by_digit[(key[0], key[1][:1])].add(url)

    def resolve(ref: tuple[str, str]) -> str | None:
        if ref in exact:
            return exact[ref]
        cands = by_digit.get((ref[0], ref[1][:1]), set())
        return next(iter(cands)) if len(cands) == 1 else None

    splits = assign_splits([p.url for p in kept], seed)
    docs = []
    for p in kept:
        targets = []
        for ref in p.see_also:
            url = resolve(ref)
            if url in number and url != p.url and number[url] not in targets:
                targets.append(number[url])
        docs.append(Document(number=number[p.url], url=p.url, title=", ".join(p.names), body=p.body,
                             query=normalize_space(p.description), split=splits[p.url],
                             see_also=tuple(sorted(targets)), notice=p.notice))
    head = {"format": SNAPSHOT_FORMAT, "format_version": SNAPSHOT_FORMAT_VERSION, **(header or {}),
            "seed": seed, "split_rule": {"dev": DEV_QUERIES, "test": TEST_QUERIES, "test_halves": list(TREC_SPLITS)},
            "relevance": {"train/dev own page": REL_BINARY, "test own page": REL_OWN,
                          "test SEE ALSO target": REL_SEE_ALSO},
            "qid_rule": f"qid = {QID_BASE} + document number", "licence": LICENCE_NOTE,
            "documents": len(docs)}
    return Collection(header=head, documents=tuple(docs))


def build_collection(source: str | Path = "/", seed: int = DEFAULT_SEED) -> Collection:
    """Build the collection from the installed packages (``source="/"``) or a ``dpkg-deb -x`` folder."""
    root = Path(source)
    files = man_files(root)
    pages: list[Page] = []
    aliases: dict[tuple[str, str], str] = {}
    link_targets: list[tuple[tuple[str, str], Path]] = []
    skipped = Counter()
    for path in files:
        ident = _identity(path)
        if path.is_symlink():
            link_targets.append((ident, path.resolve()))
            skipped["symlink"] += 1
            continue
        rp = parse_roff(read_man_file(path))
        if rp.redirect is not None:
            target = _resolve_so(root, rp.redirect)
            if target is not None:
                link_targets.append((ident, target.resolve()))
            skipped[".so stub"] += 1
            continue
        page = page_from_roff(ident[0], ident[1], rp)
        if page is None:
            skipped["no NAME line"] += 1
            continue
        pages.append(page)
    url_of = {}
    for path in files:
        if not path.is_symlink():
            name, section = _identity(path)
            url_of[path.resolve()] = f"man:{name}({section})"
    for ident, target in link_targets:
        if target in url_of:
            aliases[ident] = url_of[target]
    logger.info("%d man files: %d pages parsed, skipped %s", len(files), len(pages), dict(skipped))
    header = {"source": {"packages": package_versions(root), "upstream": "Linux man-pages",
                         "files": len(files), "pages_parsed": len(pages),
                         "skipped": dict(sorted(skipped.items()))}}
    return collection_from_pages(pages, aliases, header, seed)


# --------------------------------------------------------------------------------------------
# Snapshot and MS MARCO files
# --------------------------------------------------------------------------------------------

_RECORD_FIELDS = ("docid", "url", "title", "query", "split", "see_also", "body", "notice")


def snapshot_bytes(collection: Collection) -> bytes:
    """The snapshot's uncompressed JSONL: header line, then one line per document in number order."""
    buf = io.StringIO()
    buf.write(json.dumps(collection.header, ensure_ascii=False, sort_keys=True) + "\n")
    for d in sorted(collection.documents, key=lambda d: d.number):
        rec = {"docid": d.docid, "url": d.url, "title": d.title, "query": d.query, "split": d.split,
               "see_also": [f"D{t}" for t in d.see_also], "body": d.body, "notice": d.notice}
        buf.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return buf.getvalue().encode("utf-8")


def write_snapshot(collection: Collection, path: str | Path) -> Path:
    """Gzipped JSONL with a fixed gzip header (mtime 0, no file name), so equal collections give equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(snapshot_bytes(collection))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(raw.getvalue())
    os.replace(tmp, path)
    return path


def load_snapshot(path: str | Path = SNAPSHOT_PATH) -> Collection:
    """Read a snapshot written by :func:`write_snapshot`."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "run `python -m SeDR.manpages --rebuild-snapshot`")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise DataFormatError(path, 1, "empty snapshot")
    header = json.loads(lines[0])
    if header.get("format") != SNAPSHOT_FORMAT:
        raise DataFormatError(path, 1, f"not a {SNAPSHOT_FORMAT} file (format={header.get('format')!r})")
    docs = []
    for k, line in enumerate(lines[1:], start=2):
        rec = json.loads(line)
        missing = [f for f in _RECORD_FIELDS if f not in rec]
        if missing or not re.fullmatch(r"D\d+", rec.get("docid", "")):
            raise DataFormatError(path, k, f"bad document record (missing {missing})")
        docs.append(Document(number=int(rec["docid"][1:]), url=rec["url"], title=rec["title"], body=rec["body"],
                             query=rec["query"], split=rec["split"],
                             see_also=tuple(int(t[1:]) for t in rec["see_also"]), notice=rec["notice"]))
    return Collection(header=header, documents=tuple(docs))


def tsv_field(text: str) -> str:
    """A TSV-safe field: tabs, newlines and other whitespace runs become one space."""
    return normalize_space(text)


def write_msmarco_files(collection: Collection, data_dir: str | Path) -> dict[str, Path]:
    """Write the nine files of SPEC §1.1 into ``data_dir``; return ``{file name: path}``.

    Train/dev qrels are ``qid 0 Ddocid 1``; the TREC-style 2019/2020 qrels ``qid Q0 Ddocid rel``
    with rel 3 for the page itself and 1 for its SEE ALSO targets.
    """
    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    with open(out / CORPUS_FILE, "w", encoding="utf-8", newline="\n") as f:
        for d in sorted(collection.documents, key=lambda d: d.number):
            f.write(f"{d.docid}\t{tsv_field(d.url)}\t{tsv_field(d.title)}\t{tsv_field(d.body)}\n")
    written[CORPUS_FILE] = out / CORPUS_FILE
    for split, (qfile, rfile) in SPLIT_FILES.items():
        with open(out / qfile, "w", encoding="utf-8", newline="\n") as f:
            for qid, text in collection.queries(split):
                f.write(f"{qid}\t{tsv_field(text)}\n")
        iteration = "Q0" if split in TREC_SPLITS else "0"
        with open(out / rfile, "w", encoding="utf-8", newline="\n") as f:
            for qid, docid, rel in collection.qrels(split):
                f.write(f"{qid} {iteration} {docid} {rel}\n")
        written[qfile], written[rfile] = out / qfile, out / rfile
    return written


def format_stats(collection: Collection) -> str:
    s = collection.stats()
    src = collection.header.get("source", {}).get("packages", {})
    return "\n".join([
        f"source: {', '.join(f'{k} {v}' for k, v in src.items())}",
        f"documents: {s['documents']} (with SEE ALSO targets in the collection: {s['documents_with_see_also']})",
        "queries: " + ", ".join(f"{k} {v}" for k, v in s["queries"].items()),
        "qrels lines: " + ", ".join(f"{k} {v}" for k, v in s["qrels"].items()),
        f"words per document: mean {s['words_per_document_mean']}, median {s['words_per_document_median']}, "
        f"over 400 words {s['fraction_over_400_words']:.1%}",
    ])


@exit_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m SeDR.manpages",
        description="Write the man-pages collection in MS MARCO Document + TREC-DL format, or rebuild its snapshot.")
    parser.add_argument("--out", help="write the nine MS MARCO/TREC-DL files of SPEC §1.1 into this folder")
    parser.add_argument("--snapshot", default=str(SNAPSHOT_PATH), help="snapshot to read or (re)write")
    parser.add_argument("--rebuild-snapshot", action="store_true",
                        help="parse the man pages (--source) and write --snapshot")
    parser.add_argument("--from-source", action="store_true",
                        help="with --out: build from the man pages instead of reading the snapshot")
    parser.add_argument("--source", default="/",
                        help="'/' (installed packages, via dpkg -L) or a folder made by `dpkg-deb -x` of both .debs")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.rebuild_snapshot or args.from_source:
        collection = build_collection(args.source, seed=args.seed)
    else:
        collection = load_snapshot(args.snapshot)
    if args.rebuild_snapshot:
        path = write_snapshot(collection, args.snapshot)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    if args.out:
        write_msmarco_files(collection, args.out)
        print(f"wrote {len(SPLIT_FILES) * 2 + 1} files to {args.out}")
    print(format_stats(collection))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

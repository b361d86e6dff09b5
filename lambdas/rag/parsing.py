"""Turn uploaded bytes into plain text and a title: Markdown, plain text, HTML and PDF.

Every refusal is a `DocumentRejected` with one sentence that names the reason (empty, binary, too
large, unsupported type, unreadable PDF); callers report it with the file name and go on.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Any

from lambdas.errors import BadRequest

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
MAX_TEXT_CHARS = 5_000_000
MAX_TITLE_CHARS = 300
# A PDF's text extraction costs time in proportion to its decompressed page contents (pypdf parses a
# content stream again for every page that uses it), which a small file can make huge: a 3 KB file
# whose 10 pages share one 640 KB stream took 20 s. The contents, counted per page, may reach 16 times
# the file's size, at least 2 MiB, at most 32 MiB; at most 2,000 pages. Checked before extraction.
MAX_PDF_PAGES = 2000
PDF_CONTENT_FLOOR = 2 * 1024 * 1024
PDF_CONTENT_CEILING = 32 * 1024 * 1024
PDF_EXPANSION = 16

# Dropped from titles: control characters (C0, DEL, C1; tab and line breaks are whitespace and collapse)
# and the bidi controls that make a title display as something else (U+061C, U+200E-F, U+202A-E,
# U+2066-9).
_TITLE_DROP = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Dropped from text: control characters but tab, line feed, carriage return (form and line tabulation
# become line breaks first). PostgreSQL text cannot hold NUL; the others disguise text in terminals.
_TEXT_DROP = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")

MIME_BY_SUFFIX = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".rst": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
SUPPORTED_MIME = frozenset(MIME_BY_SUFFIX.values())


class DocumentRejected(BadRequest):
    """The document cannot be ingested; `message` says why in one sentence."""


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    title: str
    text: str
    mime: str


def mime_for(name: str, declared: str | None = None) -> str:
    """The MIME type of a document: from its suffix, else from a declared supported type."""
    suffix = PurePath(name).suffix.lower()
    if suffix in MIME_BY_SUFFIX:
        return MIME_BY_SUFFIX[suffix]
    base = (declared or "").split(";", 1)[0].strip().lower()
    if base in SUPPORTED_MIME:
        return base
    shown = suffix or "no extension"
    raise DocumentRejected(
        f"Unsupported file type ({shown}); supported: .md, .txt, .html, .pdf.", reason="unsupported"
    )


def size_label(limit: int) -> str:
    """A byte limit as people read it: "20 MiB" (binary units, as the limit is set), else bytes."""
    mib = 1024 * 1024
    return f"{limit // mib} MiB ({limit:,} bytes)" if limit % mib == 0 else f"{limit:,} bytes"


def too_large_message(size: int, limit: int) -> str:
    """The refusal of a file of `size` bytes over `limit`, in exact bytes (a rounded size can read as
    equal to the limit)."""
    return f"The file is {size:,} bytes; the limit is {size_label(limit)}."


def parse_document(
    name: str,
    data: bytes,
    *,
    mime: str | None = None,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_chars: int = MAX_TEXT_CHARS,
) -> ParsedDocument:
    """Extract the title and text of one document, or raise `DocumentRejected`."""
    kind = mime_for(name, mime)
    if not data:
        raise DocumentRejected("The file is empty.", reason="empty")
    if len(data) > max_bytes:
        raise DocumentRejected(too_large_message(len(data), max_bytes), reason="too_large")
    fallback_title = clean_title(PurePath(name).stem) or clean_title(name)
    if kind == "application/pdf":
        title, text = _pdf(data, fallback_title, max_chars)
    else:
        raw = _decode_text(data)
        if kind == "text/html":
            title, text = _html(raw, fallback_title)
        elif kind == "text/markdown":
            title, text = _markdown_title(raw) or fallback_title, raw
        else:
            title, text = fallback_title, raw
    text = _normalise(text)
    if not text.strip():
        raise DocumentRejected("The file has no extractable text.", reason="empty")
    if len(text) > max_chars:
        raise DocumentRejected(
            f"The text is {len(text):,} characters; the limit is {max_chars:,}.", reason="too_large"
        )
    return ParsedDocument(title=clean_title(title) or fallback_title, text=text, mime=kind)


def clean_title(title: str | None) -> str:
    """A title as one line of at most 300 characters: control and bidi characters removed, runs of
    whitespace (line breaks included) collapsed to one space. Empty when nothing is left."""
    if not title:
        return ""
    return " ".join(_TITLE_DROP.sub("", title).split())[:MAX_TITLE_CHARS].rstrip()


def clean_text(text: str) -> str:
    """Text without control characters (tab, line feed and carriage return stay; form feed and line
    tabulation become line feeds)."""
    return _TEXT_DROP.sub("", text.replace("\f", "\n").replace("\v", "\n"))


def _decode_text(data: bytes) -> str:
    if b"\x00" in data:
        raise DocumentRejected("The file looks binary (it contains NUL bytes), not text.", reason="binary")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentRejected("The file is not valid UTF-8 text.", reason="binary") from None
    controls = sum(1 for ch in text[:65536] if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    if controls > max(8, len(text[:65536]) // 100):
        raise DocumentRejected("The file looks binary (many control characters), not text.", reason="binary")
    return text


def _normalise(text: str) -> str:
    # PDF extraction can yield NULs, which PostgreSQL text cannot hold.
    text = clean_text(text).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _markdown_title(text: str) -> str | None:
    front = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    if front:
        found = re.search(r"^title:\s*[\"']?(.+?)[\"']?\s*$", front.group(1), re.M)
        if found:
            return found.group(1)
    heading = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.M)
    return heading.group(1) if heading else None


def _pdf(data: bytes, fallback_title: str, max_chars: int) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise DocumentRejected("The file is not a PDF (no %PDF header).", reason="broken_pdf")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentRejected("The PDF is encrypted.", reason="broken_pdf")
        pages = list(reader.pages)
        _check_pdf_cost(pages, len(data))
        texts: list[str] = []
        extracted = 0
        for number, page in enumerate(pages, start=1):
            texts.append(page.extract_text() or "")
            extracted += len(texts[-1]) + 2
            if extracted > max_chars + 2:  # stop now: the rest would only make it longer
                raise DocumentRejected(
                    f"The text is more than {max_chars:,} characters (already {extracted - 2:,} in the"
                    f" first {number} of {len(pages)} pages); the limit is {max_chars:,}.",
                    reason="too_large",
                )
        meta_title = reader.metadata.title if reader.metadata else None
    except DocumentRejected:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, AttributeError, IndexError) as exc:
        raise DocumentRejected(
            f"The PDF cannot be read ({type(exc).__name__}).", reason="broken_pdf"
        ) from None
    return (str(meta_title) if meta_title else fallback_title), "\n\n".join(texts)


def _check_pdf_cost(pages: list[Any], file_bytes: int) -> None:
    """Refuse (413) a PDF whose extraction would cost far more than its size: too many pages, or page
    contents (content streams and the form XObjects a page uses, counted for every page that uses
    them) decompressing beyond the budget. Decompression is cheap and pypdf caches it; parsing is not."""
    if len(pages) > MAX_PDF_PAGES:
        raise DocumentRejected(
            f"The PDF has {len(pages):,} pages; the limit is {MAX_PDF_PAGES:,}.", reason="too_large"
        )
    budget = min(PDF_CONTENT_CEILING, max(PDF_CONTENT_FLOOR, PDF_EXPANSION * file_bytes))
    total = 0
    for number, page in enumerate(pages, start=1):
        total += _page_content_bytes(page)
        if total > budget:
            raise DocumentRejected(
                f"The PDF's page contents expand to more than {budget:,} bytes (already {total:,} by page"
                f" {number} of {len(pages)}) from a file of {file_bytes:,} bytes; the limit is"
                f" {PDF_EXPANSION} times the file's size, at least {PDF_CONTENT_FLOOR:,} and at most"
                f" {PDF_CONTENT_CEILING:,} bytes.",
                reason="too_large",
            )


def _page_content_bytes(page: Any) -> int:
    from pypdf.generic import ArrayObject, StreamObject

    streams: list[Any] = []
    contents = page.get("/Contents")
    if contents is not None:
        resolved = contents.get_object()
        streams.extend(resolved if isinstance(resolved, ArrayObject) else [resolved])
    resources = page.get("/Resources")
    xobjects = resources.get_object().get("/XObject") if resources is not None else None
    if xobjects is not None:
        for ref in xobjects.get_object().values():
            xobject = ref.get_object()
            if isinstance(xobject, StreamObject) and xobject.get("/Subtype") == "/Form":
                streams.append(xobject)
    total = 0
    for item in streams:
        stream = item.get_object()
        if isinstance(stream, StreamObject):
            total += len(stream.get_data())
    return total


class _TextOfHtml(HTMLParser):
    """Visible text of an HTML page with block elements as line breaks. Dropped: script, style,
    noscript, template and head, and any element with the `hidden` attribute or an inline style
    `display: none` or `visibility: hidden` (with everything inside it). Stylesheets and classes are
    not evaluated, so text hidden by a CSS class is kept."""

    _BLOCK = frozenset({
        "p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section",
        "article", "header", "footer", "pre", "blockquote",
    })
    _HIDDEN = frozenset({"script", "style", "noscript", "template", "head"})
    _VOID = frozenset({
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
        "track", "wbr",
    })
    # Elements whose start closes an open <p> (HTML's implied end tags), and <li> closing an open <li>.
    _CLOSES_P = _BLOCK - {"br"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self.h1 = ""
        self._open: list[tuple[str, bool]] = []  # open elements: (tag, hides its content)
        # How many of each tag are open: an end tag that closes nothing is skipped without scanning the
        # stack (n stray end tags against n open elements took n^2 steps: 77 s for 400 KB).
        self._open_count: Counter[str] = Counter()
        self._hidden = 0  # open elements that hide their content
        self._in_title = False
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        top = self._open[-1][0] if self._open else ""
        if (top == "p" and tag in self._CLOSES_P) or (top == "li" and tag == "li"):
            self._close(len(self._open) - 1)
        hides = tag in self._HIDDEN or _hidden_by_attributes(attrs)
        if tag not in self._VOID:
            self._open.append((tag, hides))
            self._open_count[tag] += 1
            self._hidden += hides
        self._in_title |= tag == "title"
        self._in_h1 |= tag == "h1"
        if tag in self._BLOCK:
            self.parts.append("\n\n" if tag in {"p", "div", "section", "article"} or tag[0] == "h" else "\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCK and not self._hidden:  # <br/>: a line break; <div hidden/>: nothing inside
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._open_count[tag]:  # else it closes nothing: the stack is not scanned
            for index in range(len(self._open) - 1, -1, -1):
                if self._open[index][0] == tag:
                    self._close(index)
                    break
        if tag == "title":
            self._in_title = False
        if tag == "h1":
            self._in_h1 = False
        if tag in self._BLOCK:
            self.parts.append("\n")

    def _close(self, index: int) -> None:
        """Close the open element at `index` and the unclosed ones inside it."""
        for tag, hides in self._open[index:]:
            self._hidden -= hides
            self._open_count[tag] -= 1
        del self._open[index:]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._hidden:
            return
        if self._in_h1:
            self.h1 += data
        self.parts.append(data)


_INVISIBLE_STYLE = re.compile(
    r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse))\b", re.I
)


def _hidden_by_attributes(attrs: list[tuple[str, str | None]]) -> bool:
    for name, value in attrs:
        if name == "hidden":
            return True
        if name == "style" and value and _INVISIBLE_STYLE.search(value):
            return True
    return False


def _html(raw: str, fallback_title: str) -> tuple[str, str]:
    parser = _TextOfHtml()
    parser.feed(raw)
    parser.close()
    text = re.sub(r"[ \t]+", " ", "".join(parser.parts))
    text = re.sub(r" *\n *", "\n", text)
    title = " ".join(parser.title.split()) or " ".join(parser.h1.split()) or fallback_title
    return title, text

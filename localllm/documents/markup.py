"""HTML, Markdown and plain text as elements: headings become titles and set the section.

Our own small readers (lxml, markdown-it-py) rather than unstructured's partition_html/md/text: those
classify text with a spaCy model that unstructured downloads on first use, which fails offline.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

from localllm.documents.model import Element

_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_SKIP = {"head", "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object"}
_SKIP |= {"select", "button", "input", "textarea"}
_LIST_ITEMS = {"li", "dt", "dd"}
_BLOCKS = {"address", "article", "aside", "blockquote", "body", "caption", "center", "details"}
_BLOCKS |= {"dialog", "div", "dl", "fieldset", "figcaption", "figure", "footer", "form", "header"}
_BLOCKS |= {"hgroup", "hr", "html", "main", "menu", "nav", "ol", "p", "section", "summary", "ul"}
_BLOCKS |= _LIST_ITEMS
_BR = "\x00"  # a <br> in the text buffer; HTML parsers never pass NUL through
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def decode(data: bytes, suffix: str = ".txt") -> tuple[str, str]:
    """Text and the encoding it was read with: a BOM, an HTML <meta charset>, UTF-8, or Windows-1252."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le")):
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace"), encoding
    if data.startswith(codecs.BOM_UTF16_BE):
        return data[2:].decode("utf-16-be", errors="replace"), "utf-16-be"
    if suffix in (".html", ".htm") and (meta := _META_CHARSET.search(data[:4096])):
        try:
            encoding = codecs.lookup(meta.group(1).decode("ascii")).name
        except LookupError:
            encoding = ""
        if encoding and encoding != "utf-8":
            return data.decode(encoding, errors="replace"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "Windows-1252"


def read_markup(text: str, suffix: str) -> list[Element]:
    if suffix in (".html", ".htm"):
        return _read_html(text)
    if suffix in (".md", ".markdown"):
        from markdown_it import MarkdownIt

        return _read_html(MarkdownIt("commonmark", {"html": True}).enable("table").render(text))
    return _read_text(text)


def _read_html(html: str) -> list[Element]:
    import lxml.html

    html = _XML_DECLARATION.sub("", html, count=1)  # lxml refuses a str that declares an encoding
    if not html.strip():
        return []
    reader = _HtmlReader()
    reader.walk(lxml.html.document_fromstring(html))
    reader.flush()
    return reader.elements


class _HtmlReader:
    def __init__(self) -> None:
        self.elements: list[Element] = []
        self.section: str | None = None
        self.buffer: list[str] = []
        self.kind = "text"

    def flush(self) -> None:
        lines = ("".join(self.buffer)).split(_BR)
        text = "\n".join(" ".join(line.split()) for line in lines).strip()
        if text:
            self.elements.append(Element(text, None, kind=self.kind, section=self.section))
        self.buffer = []
        self.kind = "text"

    def add(self, text: str, kind: str) -> None:
        self.flush()
        if text:
            self.elements.append(Element(text, None, kind=kind, section=self.section))

    def walk(self, node: Any) -> None:
        tag = node.tag.lower() if isinstance(node.tag, str) else ""
        if tag in _SKIP or not tag:  # comments and processing instructions have no str tag
            pass
        elif tag in _HEADINGS:
            self.flush()
            title = " ".join(node.text_content().split())
            if title:
                self.section = title
                self.add(title, "title")
        elif tag == "table":
            self.add(_table_text(node), "table")
        elif tag == "pre":
            self.add(node.text_content().strip("\n"), "text")
        elif tag == "br":
            self.buffer.append(_BR)
        elif tag in _BLOCKS:
            self.flush()
            self.kind = "list" if tag in _LIST_ITEMS else "text"
            self.buffer.append(node.text or "")
            for child in node:
                self.walk(child)
            self.flush()
        else:
            self.buffer.append(node.text or "")
            for child in node:
                self.walk(child)
        self.buffer.append(node.tail or "")  # the text after an element belongs to its parent


def _table_text(table: Any) -> str:
    rows = []
    caption = table.find("caption")
    if caption is not None:
        rows.append(" ".join(caption.text_content().split()))
    for tr in table.xpath("./tr | ./thead/tr | ./tbody/tr | ./tfoot/tr"):
        cells = [" ".join(cell.text_content().split()) for cell in tr.xpath("./td | ./th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


_ATX = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_UNDERLINE = re.compile(r"^(=+|-+)\s*$")
_NUMBERED = re.compile(r"^\d+(\.\d+)*\.?\s+\S")


def _read_text(text: str) -> list[Element]:
    """Paragraphs split at blank lines; a short line standing alone that reads like a heading
    (ALL CAPS, numbered, '# marked', underlined, or a short capitalised line before a longer
    paragraph) is a title."""
    paragraphs = [p.strip("\n") for p in re.split(r"\n[ \t\f\v]*\n", text.replace("\r\n", "\n"))]
    paragraphs = [p.rstrip() for p in paragraphs if p.strip()]
    elements: list[Element] = []
    section = None
    for i, paragraph in enumerate(paragraphs):
        following = paragraphs[i + 1] if i + 1 < len(paragraphs) else ""
        title = _heading(paragraph, following)
        if title is not None:
            section = title
            elements.append(Element(title, None, kind="title", section=section))
        else:
            elements.append(Element(paragraph, None, section=section))
    return elements


def _heading(paragraph: str, following: str) -> str | None:
    lines = paragraph.strip().split("\n")
    if len(lines) == 2 and _UNDERLINE.match(lines[1].strip()) and len(lines[1].strip()) >= 3:
        return " ".join(lines[0].split())
    if len(lines) != 1:
        return None
    line = " ".join(lines[0].split())
    if atx := _ATX.match(line):
        return atx.group(1)
    words = line.split()
    if len(line) > 80 or not any(c.isalpha() for c in line) or line[-1] in ".,;:!?)":
        return None
    if line.isupper() or (_NUMBERED.match(line) and len(words) <= 10):
        return line
    if len(words) <= 8 and line[0].isupper() and len(following) > 2 * len(line):
        return line
    return None

"""Word (.docx) and PowerPoint (.pptx) files as elements, with python-docx and python-pptx.

Our own small readers rather than unstructured's partition_docx/partition_pptx: those classify every
paragraph with a spaCy model that unstructured downloads (and pip-installs) on first use, which fails
offline and must never happen in a private app. Styles and placeholders already say what is a title.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from localllm.documents.model import Element

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_EMU_PER_POINT = 12700


def read_docx(path: Path) -> tuple[list[Element], int]:
    """Paragraphs and tables in body order; pages counted from the page breaks in the file.

    Word records where its layout broke pages (lastRenderedPageBreak); a file written by another
    program may only have explicit breaks, which are used then. Either way the count is Word's last
    layout at best, not a promise.
    """
    import docx

    document = docx.Document(str(path))
    body = document.element.body
    style_names = {s.style_id: s.name or "" for s in document.styles}
    rendered = any(True for _ in body.iter(f"{_W}lastRenderedPageBreak"))
    page, section = 1, None
    elements: list[Element] = []
    for block in _blocks(body):
        if block.tag == f"{_W}tbl":
            text, breaks = _table_text(block, rendered)
            if text:
                elements.append(Element(text, page, kind="table", section=section))
            page += breaks
            continue
        kind = _paragraph_kind(block, style_names)
        if not rendered and block.find(f"{_W}pPr/{_W}pageBreakBefore") is not None:
            page += 1
        for i, segment in enumerate(_paragraph_segments(block, rendered)):
            page += i > 0
            text = " ".join(segment.split()) if kind == "title" else segment.strip()
            if not text:
                continue
            if kind == "title":
                section = text
            elements.append(Element(text, page, kind=kind, section=section))
        if not rendered and _ends_section_on_new_page(block):
            page += 1
    return elements, max(page, 1)


def _blocks(body: Any) -> Iterator[Any]:
    """Body-level paragraphs and tables in order, looking inside content controls (w:sdt)."""
    for child in body:
        if child.tag in (f"{_W}p", f"{_W}tbl"):
            yield child
        elif child.tag == f"{_W}sdt":
            content = child.find(f"{_W}sdtContent")
            if content is not None:
                yield from _blocks(content)


def _paragraph_kind(p: Any, style_names: dict[str, str]) -> str:
    style = p.find(f"{_W}pPr/{_W}pStyle")
    name = style_names.get(style.get(f"{_W}val"), "") if style is not None else ""
    lowered = name.lower()
    if lowered.startswith("heading") or lowered == "title":
        return "title"
    if p.find(f"{_W}pPr/{_W}outlineLvl") is not None:
        return "title"
    if lowered.startswith("list") or p.find(f"{_W}pPr/{_W}numPr") is not None:
        return "list"
    return "text"


def _paragraph_segments(p: Any, rendered: bool) -> list[str]:
    """The paragraph's text, split where a page breaks inside it."""
    segments: list[list[str]] = [[]]
    for node in _walk(p):
        tag = node.tag
        if tag == f"{_W}t":
            segments[-1].append(node.text or "")
        elif tag == f"{_W}tab":
            segments[-1].append("\t")
        elif tag in (f"{_W}cr", f"{_W}br"):
            if tag == f"{_W}br" and node.get(f"{_W}type") == "page":
                if not rendered:
                    segments.append([])
            else:
                segments[-1].append("\n")
        elif tag == f"{_W}noBreakHyphen":
            segments[-1].append("-")
        elif tag == f"{_W}lastRenderedPageBreak" and rendered:
            segments.append([])
    return ["".join(parts) for parts in segments]


def _walk(node: Any) -> Iterator[Any]:
    """Descendants in document order, leaving out mc:Fallback copies of the same content."""
    for child in node:
        if child.tag == _FALLBACK:
            continue
        yield child
        yield from _walk(child)


def _table_text(table: Any, rendered: bool) -> tuple[str, int]:
    """One line per row, cells joined by ' | '; and the page breaks found inside the table."""
    rows, breaks = [], 0
    for tr in table.iterfind(f"{_W}tr"):
        cells = []
        for tc in tr.iterfind(f"{_W}tc"):
            texts = []
            for p in tc.iter(f"{_W}p"):
                segments = _paragraph_segments(p, rendered)
                breaks += len(segments) - 1
                texts.extend(segments)
            cells.append(" ".join(" ".join(texts).split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows), breaks


def _ends_section_on_new_page(p: Any) -> bool:
    sect = p.find(f"{_W}pPr/{_W}sectPr")
    if sect is None:
        return False
    kind = sect.find(f"{_W}type")
    return kind is None or kind.get(f"{_W}val") != "continuous"


def read_pptx(path: Path) -> tuple[list[Element], int]:
    """Per slide: its title first, then the other shapes top to bottom, then the speaker notes.

    Slides are the pages; boxes are the shapes' positions in points from the slide's top-left.
    """
    import pptx

    presentation = pptx.Presentation(str(path))
    elements: list[Element] = []
    section = None
    for number, slide in enumerate(presentation.slides, 1):
        shapes = sorted(slide.shapes, key=lambda s: (not _is_title(s), s.top or 0, s.left or 0))
        for shape in shapes:
            for element in _shape_elements(shape, number, in_group=False):
                if element.kind == "title":
                    section = " ".join(element.text.split())
                element.section = section
                elements.append(element)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                elements.append(Element(notes, number, section=section))
    return elements, len(presentation.slides)


def _is_title(shape: Any) -> bool:
    from pptx.enum.shapes import PP_PLACEHOLDER

    titles = (PP_PLACEHOLDER.TITLE, PP_PLACEHOLDER.CENTER_TITLE, PP_PLACEHOLDER.VERTICAL_TITLE)
    return bool(shape.is_placeholder) and shape.placeholder_format.type in titles


def _shape_elements(shape: Any, slide: int, *, in_group: bool) -> Iterator[Element]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    try:
        group = shape.shape_type == MSO_SHAPE_TYPE.GROUP
    except NotImplementedError:  # python-pptx has no type for some graphic frames
        group = False
    if group:
        # Positions inside a group are in the group's own coordinates: no boxes for its members.
        for member in shape.shapes:
            yield from _shape_elements(member, slide, in_group=True)
        return
    bbox = None if in_group else _shape_box(shape)
    if shape.has_text_frame:
        lines = [p.text.strip() for p in shape.text_frame.paragraphs]
        text = "\n".join(line for line in lines if line)
        if text:
            kind = "title" if _is_title(shape) else "text"
            yield Element(text, slide, kind=kind, bbox=bbox)
    elif getattr(shape, "has_table", False) and shape.has_table:
        rows = [" | ".join(" ".join(c.text.split()) for c in row.cells) for row in shape.table.rows]
        text = "\n".join(row for row in rows if row.strip(" |"))
        if text:
            yield Element(text, slide, kind="table", bbox=bbox)


def _shape_box(shape: Any) -> tuple[float, float, float, float] | None:
    left, top, width, height = shape.left, shape.top, shape.width, shape.height
    if None in (left, top, width, height):
        return None
    return (
        left / _EMU_PER_POINT,
        top / _EMU_PER_POINT,
        (left + width) / _EMU_PER_POINT,
        (top + height) / _EMU_PER_POINT,
    )

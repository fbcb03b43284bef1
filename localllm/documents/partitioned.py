"""unstructured's elements -> ours: kinds, sections from titles, tables as Markdown.

Every partitioner is imported through partitioner(), after offline_nlp.prepare(), so none can load
a model or phone home; each is called with languages=[""] (no language detection: it is not used,
and costs a langdetect pass over the whole text).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from localllm.documents.model import Element
from localllm.documents.tables import html_table_rows, markdown_table

_KINDS = {"Title": "title", "ListItem": "list", "Table": "table"}
_SKIP = {"PageBreak", "Image", "Header", "Footer", "PageNumber"}  # page furniture, not content


def partitioner(module: str, name: str) -> Callable[..., list[Any]]:
    """unstructured.partition.<module>.<name>, imported offline-safe."""
    from localllm.documents import offline_nlp

    offline_nlp.prepare()
    return getattr(importlib.import_module(f"unstructured.partition.{module}"), name)  # type: ignore[no-any-return]


def partition(module: str, name: str, *args: Any, **kwargs: Any) -> list[Any]:
    return partitioner(module, name)(*args, languages=[""], **kwargs)


def kind_of(category: str) -> str:
    """Title, ListItem and Table keep their meaning; NarrativeText, Text, Address and the rest
    are text (offline_nlp leaves unstructured unable to tell narrative from other text)."""
    return _KINDS.get(category, "text")


def table_text(element: Any) -> str:
    """A Table element as Markdown, from its HTML (unstructured's own text drops the rows)."""
    html = getattr(element.metadata, "text_as_html", None) or ""
    text = markdown_table(html_table_rows(html))
    return text or " ".join(str(element.text).split())


def to_elements(
    found: Iterable[Any],
    *,
    page: int | None = None,
    section: str | None = None,
    titles: bool = True,
) -> list[Element]:
    """Our elements for unstructured's, in order; a title opens a section (unless `titles` is
    False: then titles are text and every element keeps `section`)."""
    elements: list[Element] = []
    for item in found:
        category = getattr(item, "category", "Text")
        if category in _SKIP:
            continue
        kind = kind_of(category)
        if kind == "table":
            text = table_text(item)
        elif kind == "title":
            text = " ".join(str(item.text).split())
        else:
            text = str(item.text).strip()
        if not text:
            continue
        if kind == "title":
            if titles:
                section = text
            else:
                kind = "text"
        elements.append(Element(text, page, kind=kind, section=section))
    return elements

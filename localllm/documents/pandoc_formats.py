"""EPUB, OpenDocument text (.odt) and RTF as elements, with unstructured's partition_epub,
partition_odt and partition_rtf: pandoc (the binary that pypandoc-binary ships, run with
--sandbox, so it reads nothing but the file and fetches nothing) turns each into HTML or Word,
which unstructured partitions. Headings become titles and set the section; none has pages.
"""

from __future__ import annotations

import re
from pathlib import Path

from localllm.documents.model import Element
from localllm.documents.partitioned import partition, to_elements

_PARTITIONERS = {
    ".epub": ("epub", "partition_epub"),
    ".odt": ("odt", "partition_odt"),
    ".rtf": ("rtf", "partition_rtf"),
}
_PANDOC_SAYS = re.compile(r"during conversion:\s*(.*?)\s*(Current version of pandoc|$)", re.S)
_AT_FILE = re.compile(r'Error at "[^"]*"\s*')


def read_converted(path: Path, suffix: str) -> list[Element]:
    module, name = _PARTITIONERS[suffix]
    try:
        found = partition(module, name, str(path))
    except RuntimeError as e:  # pandoc refused the file: keep its reason, not its advice
        raise ValueError(pandoc_reason(str(e))) from e
    return to_elements(found)


def pandoc_reason(message: str) -> str:
    """'Pandoc died with exitcode "64" during conversion: Error at "x.rtf" (line 3, column 1):
    unexpected end of input ... Current version of pandoc: ...' -> 'pandoc: (line 3, column 1):
    unexpected end of input'."""
    said = _PANDOC_SAYS.search(message)
    reason = _AT_FILE.sub("", said.group(1) if said else message)
    return "pandoc: " + " ".join(reason.split())

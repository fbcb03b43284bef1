"""Which source passage supports each sentence of an answer, found after the answer is made.

Small models cite badly, so citations do not depend on the model: each answer sentence is compared
with the sentences of every source by what the sentence says (its stemmed content words found in
the passage, the numbers it repeats) and by meaning (the embedder's cosine similarity). A sentence
takes the citation of the source that supports it best when that support clears a threshold, and is
marked unsupported otherwise; the model's own [n] is kept when the support agrees, and corrected
when it does not.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from localllm.format import pages_label
from localllm.index.lexical import QUESTION_WORDS, tokenize
from localllm.rag.prompt import Source, citation_marks

Embed = Callable[[list[str]], np.ndarray]  # unit vectors, one row per text

SUPPORT_THRESHOLD = 0.5  # chosen on bench/answers.py (bench/README.md), as the two below
QUOTE_THRESHOLD = 0.4  # how well a passage must answer the question to be quoted instead
LEAD_THRESHOLD = 0.85  # a quote this close leads even over a supported answer (1.01: never)
MEANING_WEIGHT = 0.4  # the rest is the words: a passage that says it, not one on the same topic
WRONG_NUMBER = 0.25
RANK_PRIOR = 0.03  # a quote's score given up per place its source is below the retriever's best
SAYS_SOMETHING = 5  # content words beyond the question's that a quote needs to count in full
MIN_WORDS = 2  # a sentence with fewer content words ("Sure!") is not a claim
_MARK = re.compile(r"\s*\[(\d+)(?:\s*[,;]\s*\d+)*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s*\[\d+(?:\s*[,;]\s*\d+)*\])*[\"')\]]*(?=\s+|$)|\n+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass
class SentenceSupport:
    text: str  # as the model wrote it, marks included
    start: int  # where it is in the answer
    end: int
    marks: list[int]  # the [n] the model put on it
    source: int | None = None  # the source that supports it best, when support clears the threshold
    support: float = 0.0
    span: tuple[int, int] | None = None  # where in that source's text the support is
    claim: bool = True  # False: too short to be a claim; neither supported nor not
    label: bool = False  # only a source's label (file, page, section) echoed: not shown

    @property
    def supported(self) -> bool:
        return self.source is not None

    @property
    def corrected(self) -> bool:
        """The model cited a source, and the support is elsewhere."""
        return self.supported and bool(self.marks) and self.source not in self.marks

    def to_dict(self) -> dict[str, object]:
        return {
            "sentence": self.text,
            "source": self.source,
            "support": round(self.support, 3),
            "span": list(self.span) if self.span else None,
            "model_marks": self.marks,
        }


@dataclass
class Attribution:
    sentences: list[SentenceSupport] = field(default_factory=list)

    @property
    def claims(self) -> list[SentenceSupport]:
        return [s for s in self.sentences if s.claim]

    @property
    def supported_share(self) -> float:
        claims = self.claims
        return sum(s.supported for s in claims) / len(claims) if claims else 0.0

    @property
    def any_supported(self) -> bool:
        return any(s.supported for s in self.sentences)

    def cited_sources(self) -> set[int]:
        return {s.source for s in self.sentences if s.source is not None}

    def spans(self) -> dict[int, list[tuple[int, int]]]:
        """For each source number, the spans of its text that support a sentence."""
        out: dict[int, list[tuple[int, int]]] = {}
        for s in self.sentences:
            if s.source is not None and s.span is not None and s.span not in out.get(s.source, []):
                out.setdefault(s.source, []).append(s.span)
        return out

    def to_list(self) -> list[dict[str, object]]:
        return [s.to_dict() for s in self.sentences if s.claim]


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence: ends at . ! ? (with the citation marks after it) or a line."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if text[start:end].strip():
            spans.append(_trim(text, start, end))
        start = end
    if text[start:].strip():
        spans.append(_trim(text, start, len(text)))
    return spans


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def marks_of(text: str) -> list[int]:
    return citation_marks(text)


def without_marks(text: str) -> str:
    return _MARK.sub("", text).strip()


@dataclass
class _Unit:
    source: int
    span: tuple[int, int]
    words: set[str]
    numbers: set[str]
    text: str


def _units(sources: Sequence[Source], answers: bool = False) -> list[_Unit]:
    """Each source's sentences, and each pair of neighbours (a claim may join two).

    With `answers`, a question in the text (an FAQ's heading) is no answer on its own: it is
    taken with the two sentences after it, and left out when nothing follows it."""
    units: list[_Unit] = []
    for source in sources:
        spans = split_sentences(source.text)
        windows = [*spans, *((a[0], b[1]) for a, b in itertools.pairwise(spans))]
        if answers:
            windows = _answering(source.text, spans, windows)
        texts = [source.text[a:b] for a, b in windows]
        for (a, b), text, words in zip(windows, texts, tokenize(texts), strict=True):
            units.append(_Unit(source.n, (a, b), set(words), set(_NUMBER.findall(text)), text))
    return units


def _asks(text: str) -> bool:
    return without_marks(text).rstrip().endswith("?")


def _running_header(text: str) -> bool:
    """A heading repeated in capitals at the top of a page ("HOW DO I PUT A PACKAGE ON HOLD?"):
    what follows it on the page is the end of another answer."""
    letters = [c for c in text if c.isalpha()]
    return _asks(text) and len(letters) >= 8 and all(c.isupper() for c in letters)


def _answering(
    text: str, sentences: list[tuple[int, int]], windows: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    out = []
    for a, b in windows:
        inside = [s for s in sentences if a <= s[0] and s[1] <= b]
        if any(_running_header(text[x:y]) for x, y in inside):
            continue
        if not all(_asks(text[x:y]) for x, y in inside):
            out.append((a, b))
            continue
        after = list(
            itertools.islice(
                itertools.takewhile(
                    lambda s: not _asks(text[s[0] : s[1]]), (s for s in sentences if s[0] >= b)
                ),
                2,
            )
        )
        if after:
            out.append((a, after[-1][1]))
    return list(dict.fromkeys(out))


def attribute(
    answer: str,
    sources: Sequence[Source],
    embed: Embed | None = None,
    *,
    threshold: float = SUPPORT_THRESHOLD,
) -> Attribution:
    """Each sentence of `answer` with the source (and span) that supports it best, if any does."""
    spans = split_sentences(answer)
    sentences = [
        SentenceSupport(answer[a:b], a, b, marks_of(answer[a:b])) for a, b in spans if a < b
    ]
    if not sentences:
        return Attribution()
    plain = [without_marks(s.text) for s in sentences]
    words = [set(w) for w in tokenize(plain)]
    for s, w in zip(sentences, words, strict=True):
        s.label = _only_labels(s.text, sources)
        s.claim = len(w) >= MIN_WORDS and not s.label
    units = _units(sources)
    claims = [i for i, s in enumerate(sentences) if s.claim]
    if not units or not claims:
        return Attribution(sentences)
    meaning = np.zeros((len(sentences), len(units)), dtype=np.float32)
    if embed is not None:
        vectors = embed([plain[i] for i in claims] + [u.text for u in units])
        asked, given = vectors[: len(claims)], vectors[len(claims) :]
        meaning[claims] = np.clip(asked @ given.T, 0.0, 1.0)
    for i in claims:
        sentence, wanted = sentences[i], words[i]
        numbers = set(_NUMBER.findall(plain[i]))
        best, best_score = None, 0.0
        for j, unit in enumerate(units):
            overlap = len(wanted & unit.words) / len(wanted)
            score = (
                overlap
                if embed is None
                else ((1 - MEANING_WEIGHT) * overlap + MEANING_WEIGHT * float(meaning[i, j]))
            )
            if numbers and not numbers <= unit.numbers:
                score *= WRONG_NUMBER  # a number the passage does not state: not its support
            # the model's own citation wins a tie: it read the sources in order
            if score > best_score or (score == best_score and unit.source in sentence.marks):
                best, best_score = unit, score
        sentence.support = best_score
        if best is not None and best_score >= threshold:
            sentence.source, sentence.span = best.source, best.span
    return Attribution(sentences)


_LABEL = re.compile(
    r"\b(?:pages?|pp?\.)\s*\d+(?:\s*[-\u2013,]\s*\d+)*|\bsources?\b|\bsection\b|\bdocuments?\b",
    re.IGNORECASE,
)


def _unlabelled(text: str, sources: Sequence[Source]) -> str:
    text = without_marks(text)
    for source in sources:
        for label in (source.file, source.file.rsplit(".", 1)[0], source.section or ""):
            if label.strip():
                text = re.sub(re.escape(label), " ", text, flags=re.IGNORECASE)
    return _LABEL.sub(" ", text)


def _only_labels(sentence: str, sources: Sequence[Source]) -> bool:
    """A sentence that names a source (its file, and pages or section) and says nothing else."""
    if not any(s.file.lower() in sentence.lower() for s in sources):
        return False
    return len(set(tokenize([_unlabelled(sentence, sources)])[0]) - _FILLER) < MIN_WORDS


_FILLER = {"answer", "question", "follow", "inform", "find", "refer", "see", "quot"}


def echoed(answer: str, sources: Sequence[Source], question: str) -> bool:
    """An answer with no content of its own: a source label echoed back, or the question repeated.

    What is left once the source labels (file names, sections, pages, [n]) and the question's own
    words are taken out is fewer than two content words.
    """
    left = set(tokenize([_unlabelled(answer, sources)])[0]) - set(tokenize([question])[0])
    return len(left - _FILLER) < MIN_WORDS


def cite_sentences(answer: str, attribution: Attribution) -> str:
    """The answer with each sentence's citation as attribution found it: the model's [n] kept
    where the support agrees, corrected where it does not, dropped from unsupported sentences."""
    out, at = [], 0
    for s in attribution.sentences:
        out.append(answer[at : s.start])
        at = s.end
        if s.label:
            continue
        if not s.claim:
            out.append(s.text)
            continue
        core = without_marks(s.text)
        if s.source is None:
            out.append(core)
            continue
        end = len(core.rstrip(".!?:;\"')"))
        out.append(f"{core[:end]} [{s.source}]{core[end:]}")
    out.append(answer[at:])
    return "".join(out)


def quote_candidate(
    question: str, sources: Sequence[Source], embed: Embed | None
) -> tuple[float, Source, tuple[int, int], str] | None:
    """The passage that answers `question` best: (how well, its source, its span, its text).

    Sentences are matched by their words and meaning; the retriever ranked the whole passages on
    more context than a sentence has, so each place down its order costs a little."""
    wanted = set(tokenize([question])[0]) - QUESTION_WORDS
    units = _units(sources, answers=True)
    if not wanted or not units:
        return None
    meaning = np.zeros(len(units), dtype=np.float32)
    if embed is not None:
        vectors = embed([question] + [u.text for u in units])
        meaning = np.clip(vectors[1:] @ vectors[0], 0.0, 1.0)
    scored = []
    asked = set(tokenize([question])[0])
    rank = {s.n: i for i, s in enumerate(sorted(sources, key=lambda s: s.n))}
    for j, unit in enumerate(units):
        overlap = len(wanted & unit.words) / len(wanted)
        weight = 0.0 if embed is None else MEANING_WEIGHT
        score = (1 - weight) * overlap + weight * float(meaning[j])
        # a passage that only repeats the question (a heading, a running header) says nothing
        score *= min(1.0, len(unit.words - asked) / SAYS_SOMETHING)
        score -= RANK_PRIOR * rank[unit.source]
        scored.append((score, -len(unit.text), j))
    score, _, j = max(scored)
    unit = units[j]
    source = next(s for s in sources if s.n == unit.source)
    return score, source, unit.span, unit.text


def best_quote(
    question: str, sources: Sequence[Source], embed: Embed | None, threshold: float
) -> tuple[Source, tuple[int, int], str] | None:
    """The passage that answers `question` best, quoted with its citation, if it clears the
    threshold: (source, span, text to show)."""
    found = quote_candidate(question, sources, embed)
    if found is None or found[0] < threshold:
        return None
    _, source, span, text = found
    return source, span, quote_text(source, text)


def quote_text(source: Source, passage: str) -> str:
    where = ", ".join(x for x in (source.file, pages_label(source.pages)) if x)
    quoted = " ".join(passage.split())
    return f'A quote from your documents ({where}): "{quoted}" [{source.n}]'

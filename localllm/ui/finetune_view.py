"""What the Fine-tune tab shows: dataset preview rows, the runs table, progress, the loss curve."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

import pandas as pd

from localllm.chat.conversations import ConversationError, ConversationStore, title_from
from localllm.finetune.data import Example, LoadedDataset
from localllm.finetune.jobs import RunInfo

PREVIEW_ROWS = 20
PREVIEW_COLUMNS = ["Where", "Prompt", "Answer", "Source"]
RUN_COLUMNS = ["Run", "Name", "State", "Method", "Base", "Data", "Steps", "Val loss before → after"]
SAMPLE_COLUMNS = ["Prompt", "Expected", "Base model", "Tuned model"]


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _source(example: Example, chats: dict[str, str]) -> str:
    source = example.source or {}
    if "file" in source:
        pages = source.get("pages") or source.get("page")
        return f"{source['file']} p. {pages}" if pages else str(source["file"])
    if "conversation" in source:
        return chats.get(str(source["conversation"]), "a saved conversation")
    return ", ".join(f"{k} {v}" for k, v in source.items())


def _where(example: Example) -> str:
    if example.line is None and "conversation" in (example.source or {}):
        return "a liked answer"
    return example.where()


def conversation_labels(store: ConversationStore, examples: list[Example]) -> dict[str, str]:
    """The saved conversations the previewed examples came from, by id, as a person knows them:
    the title (the first question), and when the conversation began."""
    labels: dict[str, str] = {}
    for e in examples[:PREVIEW_ROWS]:
        chat_id = str((e.source or {}).get("conversation", ""))
        if not chat_id or chat_id in labels:
            continue
        try:
            chat = store.get(chat_id)
        except ConversationError:
            labels[chat_id] = "a conversation since deleted"
            continue
        question = next((m["content"] for m in e.messages or [] if m["role"] == "user"), "")
        title = chat.title or title_from(question) or "(untitled)"
        labels[chat_id] = f"“{title}” · {datetime.fromtimestamp(chat.created):%Y-%m-%d %H:%M}"
    return labels


def _grounded_prompt(grounded: dict[str, Any]) -> str:
    """A grounded example's prompt in short: its question and the sources it was given."""
    shown = " · ".join(
        f"[{s.get('n')}] {s.get('file')}" + (f" p. {s['pages'][0]}" if s.get("pages") else "")
        for s in grounded.get("sources") or []
    )
    cites = grounded.get("cites")
    told = f"cite [{cites}]" if cites else "none holds the answer: decline"
    return f"{grounded.get('question', '')}\nSources ({told}): {shown}"


def preview_rows(examples: list[Example], chats: dict[str, str] | None = None) -> list[list[str]]:
    """The first examples as the preview shows them; `chats` names their saved conversations."""
    rows = []
    for e in examples[:PREVIEW_ROWS]:
        grounded = (e.source or {}).get("grounded")
        if e.messages and isinstance(grounded, dict):
            prompt, answer = _grounded_prompt(grounded), e.messages[-1]["content"]
        elif e.messages:
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in e.messages[:-1])
            answer = e.messages[-1]["content"]
        else:
            prompt, answer = e.text or "", ""
        rows.append([_where(e), _cut(prompt), _cut(answer), _source(e, chats or {})])
    return rows


def dataset_summary(name: str, loaded: LoadedDataset) -> str:
    text = f"**{name}**: {loaded.summary()}"
    if len(loaded.examples) > PREVIEW_ROWS:
        text += f" (the first {PREVIEW_ROWS} shown)"
    return text


def _loss(run: RunInfo) -> str:
    if run.eval_loss_before is None:
        return ""
    after = f"{run.eval_loss_after:.3f}" if run.eval_loss_after is not None else "…"
    return f"{run.eval_loss_before:.3f} → {after}"


def run_choices(runs: list[RunInfo]) -> list[tuple[str, str]]:
    """The runs as the "Show run" list names them: the name and the id, or the id alone."""
    return [(f"{r.name} ({r.id})" if r.name else r.id, r.id) for r in runs]


def runs_table(runs: list[RunInfo]) -> list[list[str]]:
    return [
        [
            r.id,
            r.name,
            r.state,
            r.method_shown,
            r.base,
            r.data,
            f"{r.step}/{r.max_steps}" if r.max_steps else str(r.step),
            _loss(r),
        ]
        for r in runs
    ]


def progress_html(run: RunInfo | None) -> str:
    if run is None:
        return ""
    total = run.max_steps or 0
    bar = (
        f'<progress id="train-progress" value="{run.step}" max="{total}" '
        f'style="width:100%"></progress>'
        if total
        else ""
    )
    return f"{bar}<div>{html.escape(run.label)}: {html.escape(run.state)} · step {run.step}/{total or '?'}</div>"


def status_markdown(run: RunInfo | None) -> str:
    if run is None:
        return "No run selected."
    named = f"**{html.escape(run.name)}** ({run.id})" if run.name else f"**{run.id}**"
    lines = [f"{named} · {run.state} · {run.method_shown} on {run.base} · {run.examples} examples"]
    if run.truncated:
        lines.append(f"{run.truncated} examples are longer than the max length and are cut.")
    if run.eval_loss_before is not None and run.perplexity_before is not None:
        text = (
            f"Validation loss {run.eval_loss_before:.3f} (perplexity {run.perplexity_before:.1f})"
        )
        if run.eval_loss_after is not None and run.perplexity_after is not None:
            text += f" → {run.eval_loss_after:.3f} (perplexity {run.perplexity_after:.1f})"
        lines.append(text)
    if run.stopped_early:
        lines.append(f"Training ended early, {html.escape(run.stopped_early)}.")
    if run.bf16 is not None:
        lines.append(f"Precision: {'bf16 autocast' if run.bf16 else 'fp32'}")
    if run.general_perplexity_before is not None and run.general_perplexity_after is not None:
        lines.append(
            f"General text perplexity (forgetting): {run.general_perplexity_before:.1f} → "
            f"{run.general_perplexity_after:.1f}"
        )
    lines += [f"**Warning:** {html.escape(w)}" for w in run.warnings]
    if run.adapter_gguf:
        lines.append(f"Adapter: `{run.adapter_gguf}` — pick it in the Chat tab's model list.")
    if run.error and run.state != "done":
        lines.append(f"**{run.state}:** {run.error}")
    if run.resumable:
        lines.append("A checkpoint was kept: **Resume** continues from it.")
    return "  \n".join(lines)


LOSS_SERIES = (("loss", "training"), ("eval_loss", "validation"))
LOSS_COLORS = {"training": "#2563eb", "validation": "#ea580c"}
# Gradio 6 cuts off the plot's legend (drawn below its box), so the label says which line is which.
LOSS_LABEL = "Loss (blue: training, orange: validation)"


def loss_frame(metrics: list[dict[str, Any]]) -> pd.DataFrame:
    # The plot fixes its colours to the series of the first frame it draws and later frames only
    # swap the data, so every frame names both series first; a row without values draws nothing.
    rows: list[dict[str, Any]] = [
        {"step": pd.NA, "loss": float("nan"), "series": name} for _, name in LOSS_SERIES
    ]
    rows += [
        {"step": int(m["step"]), "loss": float(m[key]), "series": name}
        for m in metrics
        for key, name in LOSS_SERIES
        if key in m
    ]
    frame = pd.DataFrame(rows, columns=["step", "loss", "series"])
    # typed even when empty: the plot keeps the axis types of the first frame it is given
    return frame.astype({"step": "Int64", "loss": "float64", "series": "str"})


def sample_rows(
    samples: list[dict[str, Any]], general: list[dict[str, Any]] | None = None
) -> list[list[str]]:
    """Held-out prompts with their expected answer, then the general questions (forgetting)."""
    rows = [
        [
            _cut(s.get("prompt", "")),
            _cut(s.get("expected", "")),
            s.get("base", ""),
            s.get("tuned", ""),
        ]
        for s in samples
    ]
    for g in general or []:
        kept = "kept" if g.get("tuned_knows") or not g.get("base_knew") else "forgotten"
        rows.append(
            [
                _cut(g.get("prompt", "")),
                f"(general question: {kept})",
                g.get("base", ""),
                g.get("tuned", ""),
            ]
        )
    return rows

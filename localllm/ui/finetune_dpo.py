"""The Fine-tune tab's offer of DPO: how many preference pairs the user's thumbs and regenerations
give (finetune.preferences), and, from MIN_PAIRS on, the DPO method and a button that makes them
the dataset. A dataset file of pairs also brings the method."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import gradio as gr

from localllm.finetune import jobs
from localllm.finetune.data import Example
from localllm.finetune.preferences import (
    MIN_PAIRS,
    LoadedPairs,
    PreferencePair,
    describe,
    feedback_pairs,
    is_pairs_file,
    load_examples,
    write_pairs,
)
from localllm.finetune.train_config import DPO_DEFAULTS
from localllm.services import Services
from localllm.ui.finetune_view import conversation_labels, dataset_summary, preview_rows

__all__ = ["DPO_METHOD", "PreferenceOffer", "load_examples", "method_settings"]

DPO_METHOD = ("DPO (prefer the answers you liked or kept)", "dpo")
DPO_QLORA_METHOD = ("DPO on a 4-bit base (QLoRA: less memory, slower)", "dpo-4bit")
DPO_CHOICES = (DPO_METHOD[1], DPO_QLORA_METHOD[1])


def method_settings(choice: str) -> dict[str, Any]:
    """The Method radio's value as the run's settings: "dpo-4bit" is DPO with a 4-bit base."""
    if choice == DPO_QLORA_METHOD[1]:
        return {"method": DPO_METHOD[1], "four_bit": True}
    return {"method": choice}


def preview_examples(pairs: list[PreferencePair]) -> list[Example]:
    """Each pair as a preview row: its line, the question, "chosen\\n\\nover: rejected", and the
    saved conversation it came from."""
    shown = []
    for n, p in enumerate(pairs, start=1):
        conversation = p.source.get("conversation")
        shown.append(
            Example(
                messages=[
                    {"role": "user", "content": p.prompt},
                    {"role": "assistant", "content": f"{p.chosen}\n\nover: {p.rejected}"},
                ],
                line=n,
                source={"conversation": conversation} if conversation else None,
            )
        )
    return shown


class PreferenceOffer:
    """Built under the Method radio; wire() once the dataset's outputs exist."""

    def __init__(self, services: Services, method: gr.Radio) -> None:
        self.services = services
        self.method = method
        self.plain_methods = [c for c in method.choices if c[1] not in DPO_CHOICES]
        self.note = gr.Markdown(elem_id="ft-pairs")
        self.use = gr.Button(
            "Train on my preference pairs (DPO)", visible=False, elem_id="ft-use-pairs"
        )

    def pairs(self) -> list[PreferencePair]:
        # the embedder loads only when there are liked and disliked answers to compare
        return feedback_pairs(
            self.services.conversations, lambda t: self.services.embedder.embed(t)
        )

    def methods(self, dpo: bool) -> list[tuple[str, str]]:
        if not dpo:
            return list(self.plain_methods)
        return [*self.plain_methods, DPO_METHOD, DPO_QLORA_METHOD]

    def offer(self) -> tuple[Any, ...]:
        count = len(self.pairs())
        enough = count >= MIN_PAIRS
        return (
            describe(count) + ".",
            gr.update(visible=enough),
            gr.update(choices=self.methods(enough)),
        )

    def take(self) -> tuple[Any, ...]:
        pairs = self.pairs()
        if len(pairs) < MIN_PAIRS:
            raise gr.Error(describe(len(pairs)))
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        folder = jobs.runs_dir(self.services.settings) / "datasets"
        path = write_pairs(pairs, folder / f"preferences-{stamp}.jsonl")
        shown = preview_examples(pairs)
        chats = conversation_labels(self.services.conversations, shown)
        summary = dataset_summary(describe(len(pairs)), LoadedPairs(pairs, path=path).as_dataset())
        return (
            str(path),
            summary,
            preview_rows(shown, chats),
            gr.update(choices=self.methods(True), value=DPO_METHOD[1]),
            DPO_DEFAULTS["max_steps"],
            DPO_DEFAULTS["learning_rate"],
        )

    def follow(self, path: str, current: str) -> Any:
        """A dataset of pairs brings DPO; another dataset takes it away if it was chosen."""
        if path and is_pairs_file(path):
            chosen = current if current in DPO_CHOICES else DPO_METHOD[1]
            return gr.update(choices=self.methods(True), value=chosen)
        return gr.update(value="lora") if current in DPO_CHOICES else gr.update()

    def wire(self, demo: gr.Blocks, dataset_outputs: list[Any], steps: Any, rate: Any) -> None:
        """dataset_outputs: the tab's (dataset path, summary, preview)."""
        demo.load(self.offer, None, [self.note, self.use, self.method], api_name=False)
        self.use.click(
            self.take,
            None,
            [*dataset_outputs, self.method, steps, rate],
            api_name="dataset_preferences",
        )
        path = dataset_outputs[0]
        path.change(self.follow, [path, self.method], self.method, api_name=False)

"""`localllm models | chat | download`: the models folder, a one-shot answer, a Hub download."""

from __future__ import annotations

import argparse
import sys

from localllm.cli.output import echo_stream, print_json
from localllm.config import Settings
from localllm.format import human_count, human_size


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.llm.catalog import list_models

    models = list_models(settings)
    if args.json:
        print_json(
            {"models_dir": str(settings.models_dir), "models": [m.to_dict() for m in models]}
        )
        return 0
    for m in models:
        if not m.ok:
            print(f"{m.name}  BROKEN: {m.error}")
            continue
        params = human_count(m.parameters)
        extra = f"adapter for {m.base}" if m.kind == "adapter" else f"ctx {m.context_length}"
        tmpl = "" if m.kind == "adapter" or m.has_chat_template else ", no chat template"
        tag = " (bundled)" if m.bundled else ""
        print(
            f"{m.name}{tag}  {m.architecture} {params} {m.quantization}, {extra}{tmpl}, "
            f"{human_size(m.size_bytes)}"
        )
    return 0


def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.chat.service import ChatMessage, ChatRequest
    from localllm.llm.manager import params_from_settings
    from localllm.services import Services

    services = Services(settings)
    try:
        params = params_from_settings(
            settings,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
            stop=tuple(args.stop) or None,
        )
        answer = services.chat.answer(
            ChatRequest(
                [ChatMessage("user", args.message)],
                model=args.model,
                params=params,
                system_prompt=args.system,
            )
        )
        echo_stream(answer.stream(), quiet=args.json)
        stats = answer.stats
        if args.json:
            print_json(
                {
                    "model": answer.model.name,
                    "answer": answer.text,
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                    "seconds": round(stats.seconds_total, 3),
                    "finish_reason": stats.finish_reason,
                }
            )
        else:
            sys.stdout.write("\n")
        return 0
    finally:
        services.close()


def cmd_download(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.llm.download import download_gguf

    info = download_gguf(settings, args.repo, args.filename, revision=args.revision)
    if args.json:
        print_json({"downloaded": info.to_dict()})
    else:
        print(f"downloaded {info.name} ({human_size(info.size_bytes)}) to {settings.models_dir}")
    return 0

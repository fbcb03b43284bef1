"""`localllm finetune | runs | export`: fine-tune runs from the command line (finetune.jobs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from localllm.cli.output import print_json
from localllm.config import Settings
from localllm.errors import LocalLLMError
from localllm.finetune import jobs
from localllm.finetune.grounded import DECLINE_SHARE
from localllm.finetune.names import QUANT_CHOICES


def _progress(info: jobs.RunInfo) -> None:
    total = f"/{info.max_steps}" if info.max_steps else ""
    print(f"{info.id}: {info.state} step {info.step}{total}", file=sys.stderr, flush=True)


def _follow(settings: Settings, run_id: str, quiet: bool) -> jobs.RunInfo:
    """Wait for the run; Ctrl-C cancels it (a checkpoint is kept) and waits for it to stop."""
    try:
        return jobs.wait(settings, run_id, None if quiet else _progress)
    except KeyboardInterrupt:
        print(f"cancelling {run_id} (resume: localllm finetune --resume {run_id})", file=sys.stderr)
        jobs.cancel(settings, run_id)
        return jobs.wait(settings, run_id)


def cmd_finetune(settings: Settings, args: argparse.Namespace) -> int:
    if args.resume:
        run_id = args.resume
        jobs.start(settings, run_id, resume=True)
    else:
        if args.method == "dpo" and not args.data:  # the pairs of the saved conversations
            from localllm.finetune.preferences import saved_pairs_file

            args.data = str(saved_pairs_file(settings)[0])
        if not args.data:
            raise LocalLLMError("give --data FILE.jsonl (or --resume RUN)")
        hyper = {
            "max_steps": args.max_steps,
            "epochs": args.epochs,
            "rank": args.rank,
            "alpha": args.alpha,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "validation_fraction": args.validation_fraction,
            "samples": args.samples,
            "bf16": args.bf16,
            "rehearsal": args.rehearsal,
            "stop_loss": args.stop_loss,
            "beta": args.beta,
            "four_bit": args.four_bit or None,
        }
        if args.epochs and args.max_steps is None:
            hyper["max_steps"] = 0
        run_id, loaded = jobs.create_run(
            settings,
            args.data,
            base=args.base,
            method=args.method,
            export_over=args.export_over,
            name=args.name,
            **hyper,
        )
        if loaded.problems:
            print(f"{Path(args.data).name}: {loaded.summary()}", file=sys.stderr)
        created = jobs.run_info(settings, run_id)
        if created.truncated:
            print(
                f"{created.truncated} of {created.examples} examples are longer than "
                f"{created.config['max_length']} tokens and will be cut (--max-length)",
                file=sys.stderr,
            )
        jobs.start(settings, run_id)
    if not args.quiet:
        print(
            f"run {run_id}: log in {jobs.run_path(settings, run_id) / 'train.log'}", file=sys.stderr
        )
    info = _follow(settings, run_id, args.quiet or args.json)
    result = {
        "run": info.id,
        "name": info.name,
        "state": info.state,
        "adapter_gguf": info.adapter_gguf,
        "eval_loss_before": info.eval_loss_before,
        "eval_loss_after": info.eval_loss_after,
        "perplexity_before": info.perplexity_before,
        "perplexity_after": info.perplexity_after,
        "steps": info.step,
        "stopped_early": info.stopped_early,
        "bf16": info.bf16,
        "general_perplexity_before": info.general_perplexity_before,
        "general_perplexity_after": info.general_perplexity_after,
        "warnings": info.warnings,
    }
    if info.state != "done":
        result["error"] = info.error
    if args.json:
        print_json(result)
    elif info.state == "done":
        print(f"run {info.id} done: {info.adapter_gguf}")
        if info.eval_loss_before is not None and info.eval_loss_after is not None:
            print(
                f"validation loss {info.eval_loss_before:.3f} -> {info.eval_loss_after:.3f}"
                f" (perplexity {info.perplexity_before:.1f} -> {info.perplexity_after:.1f})"
            )
        for warning in info.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    else:
        print(f"run {info.id} {info.state}: {info.error}", file=sys.stderr)
    return 0 if info.state == "done" else 1


def cmd_runs(settings: Settings, args: argparse.Namespace) -> int:
    runs = jobs.list_runs(settings)
    if args.json:
        print_json({"runs_dir": str(settings.runs_dir), "runs": [r.to_dict() for r in runs]})
        return 0
    if not runs:
        print(f"no fine-tune runs in {settings.runs_dir}")
    for r in runs:
        steps = f"{r.step}/{r.max_steps}" if r.max_steps else str(r.step)
        loss = ""
        if r.eval_loss_before is not None and r.eval_loss_after is not None:
            loss = f"  val loss {r.eval_loss_before:.3f} -> {r.eval_loss_after:.3f}"
        named = f"  “{r.name}”" if r.name else ""
        print(f"{r.id}{named}  {r.state:<10} {r.method_shown:<5} {r.base}  steps {steps}{loss}")
        if r.error and r.state != "done":
            print(f"    {r.error}")
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.finetune.outputs import export_run

    def progress(fraction: float, message: str) -> None:
        if not args.json:
            print(f"{fraction:4.0%} {message}", file=sys.stderr, flush=True)

    quant = (args.quant or "F16") if args.merge or args.quant else None
    result = export_run(settings, args.run, quant=quant, progress=progress)
    if args.json:
        print_json(result)
    else:
        for key in ("adapter_gguf", "merged_gguf"):
            if key in result:
                print(result[key])
    return 0


def cmd_dataset(settings: Settings, args: argparse.Namespace) -> int:
    """Write a training JSONL from liked chat answers or from a collection's documents."""
    from localllm.finetune.data import write_jsonl

    out = Path(args.out)
    skipped: list[str] = []
    extra: dict[str, object] = {}
    if args.dataset_command == "liked":
        from localllm.chat.conversations import ConversationStore
        from localllm.finetune.data import liked_answers

        conversations = ConversationStore(settings.conversations_path)
        try:
            examples = liked_answers(conversations)
        finally:
            conversations.close()
        if not examples:
            raise LocalLLMError("no liked answers yet: give answers a thumbs up in the Chat tab")
    else:
        import signal
        import threading

        from localllm.finetune.from_documents import pairs_from_documents
        from localllm.finetune.grounded import grounded_from_documents
        from localllm.services import Services

        services = Services(settings)
        stop = threading.Event()

        def progress(done: int, total: int, message: str) -> None:
            if not args.json:
                print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

        # Ctrl-C stops after the current passage and keeps the pairs written so far
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        asked = {
            "documents": args.doc or None,
            "max_pairs": args.max_pairs,
            "progress": progress,
            "cancel": stop,
        }
        try:
            model = services.models.get(args.model)
            if args.grounded:
                grounded = grounded_from_documents(
                    services, model, args.collection, decline_share=args.decline_share, **asked
                )
                examples, skipped = grounded.examples, grounded.skipped
                extra = grounded.to_dict()
                del extra["examples"], extra["skipped"]
            else:
                made = pairs_from_documents(services.store, model, args.collection, **asked)
                examples, skipped = made.examples, made.skipped
        finally:
            signal.signal(signal.SIGINT, previous)
            services.close()
        if not examples:
            raise LocalLLMError(f"the model wrote no usable pairs ({'; '.join(skipped[:3])})")
    write_jsonl(examples, out)
    result = {"path": str(out), "examples": len(examples), "skipped": skipped, **extra}
    if args.json:
        print_json(result)
    else:
        print(
            f"{len(examples)} examples written to {out}"
            + (f", {len(skipped)} skipped" if skipped else "")
        )
        if extra:
            print(
                f"{extra['declines']} of them decline (only unrelated sources given); train on "
                f"them whole: localllm finetune --data {out} --max-length {extra['max_length']}"
            )
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dataset = sub.add_parser(
        "dataset", help="make a training JSONL from liked answers or documents"
    )
    kinds = dataset.add_subparsers(dest="dataset_command", required=True)
    liked = kinds.add_parser("liked", help="the chat answers you gave a thumbs up")
    docs = kinds.add_parser("docs", help="the chat model writes a Q/A pair per passage")
    docs.add_argument("--collection", default="default")
    docs.add_argument("--doc", action="append", help="only this document (repeatable)")
    docs.add_argument("--max-pairs", type=int, default=50)
    docs.add_argument("--model", help="the model that writes the pairs (default model)")
    docs.add_argument(
        "--grounded",
        action="store_true",
        help="examples in the chat's own grounded prompt: retrieved sources, answers citing [n]",
    )
    docs.add_argument(
        "--decline-share",
        type=float,
        default=DECLINE_SHARE,
        help=f"with --grounded: share given only unrelated sources, taught to decline ({DECLINE_SHARE})",
    )
    for kind in (liked, docs):
        kind.add_argument("--out", required=True, help="the JSONL file to write")
        kind.add_argument("--json", action="store_true", help="one JSON object on stdout")
    dataset.set_defaults(func=cmd_dataset)

    tune = sub.add_parser("finetune", help="(Q)LoRA fine-tune a chat model on a JSONL dataset")
    tune.add_argument(
        "--data", help="JSONL: messages | prompt+completion | instruction+output | text"
    )
    tune.add_argument(
        "--base", help="the chat model to tune (default: the default model), or an HF model folder"
    )
    tune.add_argument(
        "--export-over", metavar="MODEL", help="with an HF folder --base: the GGUF of that model"
    )
    tune.add_argument(
        "--method",
        choices=["lora", "qlora", "dpo"],
        default="lora",
        help="dpo: LoRA on preference pairs, --data of prompt/chosen/rejected lines or, without "
        "--data, the pairs of your thumbs and regenerations",
    )
    tune.add_argument("--beta", type=float, help="dpo: how close to the base it stays (0.1)")
    tune.add_argument(
        "--four-bit",
        action="store_true",
        help="dpo: load the base in 4 bits (NF4) as QLoRA does: less memory, slower",
    )
    tune.add_argument("--name", help="a name for the run: it names the tuned model's files")
    tune.add_argument("--max-steps", type=int)
    tune.add_argument("--epochs", type=float, help="train for epochs instead of --max-steps")
    tune.add_argument("--rank", type=int)
    tune.add_argument("--alpha", type=float)
    tune.add_argument("--learning-rate", type=float)
    tune.add_argument("--batch-size", type=int)
    tune.add_argument("--max-length", type=int, help="tokens per example (longer ones are cut)")
    tune.add_argument("--validation-fraction", type=float)
    tune.add_argument("--samples", type=int, help="held-out prompts answered before/after (3)")
    tune.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        help="bf16 autocast: on, off (fp32), or auto (where the hardware has it; the default)",
    )
    tune.add_argument(
        "--rehearsal",
        type=float,
        help="the base's general answers mixed in per example, against forgetting (0.5; 0: off)",
    )
    tune.add_argument(
        "--stop-loss",
        type=float,
        help="end training once the held-out loss is below this: learnt (0.01; 0: all steps)",
    )
    tune.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    tune.add_argument("--quiet", action="store_true", help="no progress on stderr")
    tune.add_argument("--json", action="store_true", help="one JSON object on stdout")
    tune.set_defaults(func=cmd_finetune)

    runs = sub.add_parser("runs", help="list fine-tune runs")
    runs.add_argument("--json", action="store_true", help="one JSON object on stdout")
    runs.set_defaults(func=cmd_runs)

    export = sub.add_parser(
        "export", help="write a run's adapter as a GGUF LoRA, or merged into a full GGUF"
    )
    export.add_argument("run")
    export.add_argument("--merge", action="store_true", help="a full GGUF (base + adapter)")
    export.add_argument("--quant", type=str.upper, choices=QUANT_CHOICES, help="implies --merge")
    export.add_argument("--json", action="store_true", help="one JSON object on stdout")
    export.set_defaults(func=cmd_export)

"""`localllm search | ask | eval`: grounded chat from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from localllm.cli.output import echo_stream, print_json
from localllm.config import Settings
from localllm.format import pages_label
from localllm.index.retrieve import MODES
from localllm.index.store import DEFAULT_COLLECTION


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.services import Services

    services = Services(settings)
    try:
        found = services.retriever().search(
            args.query,
            args.collection,
            k=args.k or settings.search_k,
            documents=args.doc or None,
            mode=args.mode,
        )
        if args.json:
            print_json([h.to_dict() for h in found.hits])
            return 0
        for rank, hit in enumerate(found.hits, start=1):
            where = ", ".join(x for x in (hit.file, pages_label(hit.chunk.pages)) if x)
            section = f"  [{hit.chunk.section}]" if hit.chunk.section else ""
            print(f"{rank}. {where}{section}  score {hit.score:.3f}")
            print("   " + " ".join(hit.chunk.text.split())[:300])
        if not found.hits:
            print("no matching passages")
        return 0
    finally:
        services.close()


def cmd_ask(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.chat.service import ChatMessage, ChatRequest
    from localllm.llm.manager import params_from_settings
    from localllm.services import Services

    services = Services(settings)
    try:
        params = params_from_settings(
            settings, max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
        )
        answer = services.chat.answer(
            ChatRequest(
                [ChatMessage("user", args.question)],
                model=args.model,
                params=params,
                collection=args.collection,
                documents=args.doc or None,
            )
        )
        echo_stream(answer.stream(), quiet=args.json)
        if args.json:
            print_json(answer.to_dict())
            return 0
        print()
        grounded = answer.grounded
        if grounded is not None and grounded.outcome in ("quoted", "unsupported"):
            print("\nNothing in that answer is supported by your documents. Instead:")
            print(answer.text)
        if answer.sources:
            print("\nSources:")
        for s in answer.sources:
            mark = "*" if s.cited else " "
            where = ", ".join(x for x in (s.file, pages_label(s.pages)) if x)
            print(f"{mark}[{s.n}] {where}  {' '.join(s.text.split())[:120]}")
        return 0
    finally:
        services.close()


def _compare(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.eval.compare import CompareError, compare_models
    from localllm.eval.generated_qa import generate_qa, write_qa
    from localllm.eval.metrics import load_qa
    from localllm.llm.manager import params_from_settings
    from localllm.services import Services

    qa_path = Path(args.qa_file)
    if args.generate and qa_path.exists():
        raise CompareError(
            f"{qa_path} exists: --generate writes a new question set, pick a new name"
        )
    services = Services(settings)

    def show(done: int, total: int, message: str = "") -> None:
        if not args.json:
            print(f"\r{done}/{total} {message[:70]:<70}", end="", file=sys.stderr, flush=True)

    try:
        models = (args.models or "").split(",")
        if args.generate:
            services.store.collection(args.collection)
            items, chunks = generate_qa(
                services.store,
                services.models.get(args.model),
                args.collection,
                max_pairs=args.generate,
                progress=show,
            )
            write_qa(items, qa_path, chunks)
            if not args.json:
                print(f"\nwrote {len(items)} questions to {qa_path}", file=sys.stderr)
        items = load_qa(qa_path, need_answer=True)
        params = params_from_settings(settings, temperature=0.0, seed=0, max_tokens=args.max_tokens)
        modes = {"both": (True, False), "with": (True,), "without": (False,)}[args.retrieval]
        result = compare_models(
            services, items, args.collection, models, params=params, modes=modes, progress=show
        )
        if args.json:
            print_json(result.to_dict(details=args.details))
            return 0
        print(file=sys.stderr)
        columns = ("model", "retrieval", "f1", "rouge_l", "citation_precision", "gold_page_cited")
        columns += ("declined", "perplexity", "seconds")
        print("  ".join(columns))
        for row in result.to_dict()["rows"]:
            print("  ".join("-" if row[c] is None else str(row[c]) for c in columns))
        return 0
    finally:
        services.close()


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    if args.what == "compare":
        return _compare(settings, args)
    from localllm.eval.metrics import load_qa
    from localllm.eval.runs import evaluate_answers, evaluate_retrieval
    from localllm.llm.manager import params_from_settings
    from localllm.services import Services

    items = load_qa(Path(args.qa_file))
    services = Services(settings)

    def show(done: int, total: int) -> None:
        if not args.json:
            print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

    try:
        services.store.collection(args.collection)  # a clear error before any work
        if args.what == "retrieval":
            scores = evaluate_retrieval(
                services.retriever(), items, args.collection, k=args.k, progress=show
            )
            result: dict[str, Any] = scores.to_dict()
        else:
            model = services.models.get(args.model)
            params = params_from_settings(settings, temperature=0.0, seed=0)
            answers, details = evaluate_answers(
                services.grounded(model), model, items, args.collection, params, progress=show
            )
            result = answers.to_dict()
            if args.details:
                result["details"] = details
        if not args.json:
            print(file=sys.stderr)
        if args.json:
            print_json(result)
        else:
            for key, value in result.items():
                if key != "details":
                    print(f"{key}: {value}")
        return 0
    finally:
        services.close()


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    search = sub.add_parser("search", help="find passages in indexed documents (hybrid search)")
    search.add_argument("query")
    search.add_argument("--collection", default=DEFAULT_COLLECTION)
    search.add_argument("--k", type=_positive, help="passages to return (default: search_k, 10)")
    search.add_argument("--doc", action="append", help="only this document (repeatable)")
    search.add_argument("--mode", choices=MODES, default="hybrid")
    search.add_argument("--json", action="store_true", help="a JSON list on stdout")
    search.set_defaults(func=cmd_search)

    ask = sub.add_parser("ask", help="a grounded answer from your documents, with sources")
    ask.add_argument("question")
    ask.add_argument("--collection", default=DEFAULT_COLLECTION)
    ask.add_argument("--doc", action="append", help="only this document (repeatable)")
    ask.add_argument("--model", help="a file name from `localllm models`, or 'bundled'")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--seed", type=int)
    ask.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ask.set_defaults(func=cmd_ask)

    evaluate = sub.add_parser(
        "eval", help="measure retrieval or answers on a question set, or compare models"
    )
    evaluate.add_argument("what", choices=["retrieval", "answers", "compare"])
    evaluate.add_argument(
        "qa_file",
        metavar="QA.jsonl",
        help='lines {"question", "doc", "page"}; for compare also "answer" (doc, page optional)',
    )
    evaluate.add_argument("--collection", default=DEFAULT_COLLECTION)
    evaluate.add_argument("--k", type=_positive, default=10, help="retrieval depth")
    evaluate.add_argument(
        "--model", help="the model for `eval answers`, and the one writing `--generate` questions"
    )
    evaluate.add_argument(
        "--models",
        help="compare: models from `localllm models`, comma-separated (A,B; default: the default)",
    )
    evaluate.add_argument(
        "--generate",
        type=_positive,
        metavar="N",
        help="compare: first write N questions with answers from the collection to QA.jsonl",
    )
    evaluate.add_argument("--max-tokens", type=int, help="compare: longest answer, in tokens")
    evaluate.add_argument(
        "--retrieval",
        choices=["both", "with", "without"],
        default="both",
        help="compare: each model with and without retrieval (both), or in one mode only",
    )
    evaluate.add_argument(
        "--details", action="store_true", help="per-question results (answers, compare)"
    )
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")
    evaluate.set_defaults(func=cmd_eval)

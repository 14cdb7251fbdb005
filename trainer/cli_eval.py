"""`moviechat-train eval` (a model's evaluation and its report) and `moviechat-train probes`
(the context probes alone)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moviechat_tui.core.backends import BACKENDS
from trainer.cli_common import UsageError, add_corpus_arguments, resolve_corpus


def add_eval_command(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="reply perplexity, sampled-reply metrics and the genre test of a model")
    parser.add_argument("--model", metavar="SPEC", default="default",
                        help="a trainer run dir, default, smollm2-135m, a model dir or a hub id (default: default)")
    add_corpus_arguments(parser)
    parser.add_argument("--split", default="validation", choices=("train", "validation", "test", "all"))
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--samples", type=int, default=200, metavar="N",
                        help="held-out contexts to sample replies for (default 200; 0 skips sampling)")
    parser.add_argument("--seed", type=int, default=0, help="picks the samples and seeds decoding, baseline, genre shuffle")
    parser.add_argument("--max-length", type=int, default=256, metavar="N", help="tokens per perplexity example")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="examples per perplexity batch")
    parser.add_argument("--genres", action=argparse.BooleanOptionalAction, default=None,
                        help="condition on the true genres (default: as the run was trained; off for other models)")
    parser.add_argument("--genre-test", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure perplexity with true vs shuffled genres (default on)")
    parser.add_argument("--persona", action=argparse.BooleanOptionalAction, default=None,
                        help="name the characters and the film in prompts (default: as the run was trained; off for other models)")
    parser.add_argument("--persona-test", action=argparse.BooleanOptionalAction, default=True,
                        help="with persona: also measure perplexity with true vs shuffled personas (default on)")
    parser.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True,
                        help="run the context probes: recall of stated facts, forced choice, own name (default on)")
    parser.add_argument("--probe-seeds", type=int, default=3, metavar="N", help="sampled replies per probe (default 3)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="how replies are sampled (default: as the chat app does)")
    parser.add_argument("--out", type=Path, metavar="FILE.md",
                        help="markdown report (default: eval-SPLIT.md in a run dir, else ./eval-MODEL-SPLIT.md)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from moviechat_tui.core.loading import ModelLoadError
    from trainer.eval_report import default_report_path, markdown_report, print_report
    from trainer.evaluate import EvalConfig, EvalError, evaluate

    config = EvalConfig(samples=args.samples, seed=args.seed, max_length=args.max_length, batch_size=args.batch_size,
                        genres=args.genres, genre_test=args.genre_test, persona=args.persona,
                        persona_test=args.persona_test, probes=args.probes, probe_seeds=args.probe_seeds)
    try:
        model = args.model
        if args.backend != "auto":
            from moviechat_tui.core.loading import load_model

            model = load_model(args.model, backend=args.backend)
        result = evaluate(model, resolve_corpus(args), args.split, config, progress=args.progress and sys.stderr.isatty())
    except (EvalError, ModelLoadError) as exc:
        raise UsageError(str(exc)) from None
    out = args.out or default_report_path(args.model, result)
    try:
        out.write_text(markdown_report(result))
        result["report"] = str(out)
    except OSError as exc:
        print(f"warning: could not write the report {out}: {exc.strerror}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
        if "report" in result:
            print(f"report: {out}")
    return 0


def add_probes_command(subparsers) -> None:
    parser = subparsers.add_parser("probes", help="the context probes alone: recall of stated facts, forced choice, own name")
    parser.add_argument("--model", metavar="SPEC", default="default", help="any model spec (default: default)")
    parser.add_argument("--seeds", type=int, default=3, metavar="N", help="sampled replies per probe (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="picks the probes' personas, fillers and values")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every probe, reply and score as JSON")
    parser.set_defaults(func=run_probes_command)


def run_probes_command(args: argparse.Namespace) -> int:
    from moviechat_tui.core.loading import ModelLoadError, load_model
    from trainer.probes import run_probes

    if args.seeds < 1:
        raise UsageError("--seeds must be at least 1")
    try:
        loaded = load_model(args.model, backend=args.backend)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from None
    report = run_probes(loaded, args.seeds, args.seed)
    print(f"{args.model} ({loaded.backend}): {report['probes']} probes x {report['seeds']} replies")
    print(f"  names the fact:        {report['recall']:.1%}  (by distance: "
          + ", ".join(f"{d}: {v:.0%}" for d, v in report["by_distance"].items()) + ")")
    print(f"  names its own persona: {report['own_name']:.1%}")
    print(f"  forced choice:         {report['forced_choice']:.1%}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "backend": loaded.backend, **report}, indent=1))
    return 0

"""Which GGUF copy should the llama.cpp backend run? Every option on one model, in one run.

    python bench/gguf_options.py --save bench/results/gguf-options.json     # the shipped default

For a model that is a LoRA run on the bundled SmolLM2 GGUF (the shipped `default`), side by side:
  * the base GGUF as it ships (q4_1) with the adapter applied by llama.cpp at run time (gguf_export.write_lora)
  * the adapter merged, then written as f32 and quantized by llama.cpp to q8_0, q5_1, q4_1 and q4_0
  * the adapter merged, written as each mixed copy the backend offers on request (llamacpp_mix.PLANS:
    GPTQ iq4_nl for some projections, q8_0 elsewhere), and for comparison every projection in plain iq4_nl
  * two more mixed copies for the record (EXTRA_PLANS: the MLP's up projection only; attention only)
  * the base GGUF alone (q4_1, no adapter): the speed llama.cpp users get from that file
Each with the quality guard's two measures (the perplexity of everyday replies, and of replies that
use the history, against the transformers model in memory, adapter merged: backends/quality.py),
an independent check on the evaluation's context probes (trainer/probes.py: the log-likelihood of
each probe's true answer, mean change in nats against transformers; the guard never sees these),
and greedy decode speed and prefill time on a 10-turn history (llama-cpp-python's bare loop, as
bench/inference.py's (c); runs of all options alternate, medians reported). The backend keeps q8_0
while it is within the guard's 2 % on both measures, else f32, and writes a mixed copy only when asked
(llamacpp_cache.py): this script is the evidence for that choice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference_runs import history, llamacpp_run  # noqa: E402  (bench/ is on sys.path)

# Mixed copies measured here only (not tried by the backend): which projections lose the history.
EXTRA_PLANS = {"mix-4bit-mlp-up": ("mlp.up_proj",),
               "mix-4bit-attention": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj")}


def probe_answers(scorer, fmt) -> list[float]:
    """Log-likelihood of each context probe's true answer, teacher-forced (the eval's probe set)."""
    import torch

    from moviechat_tui.core.dialogue import fit_prompt
    from trainer.probes import build_probes

    out = []
    for probe in build_probes(0):
        prompt = fit_prompt(fmt, probe.turns, 768, probe.conditioning).ids
        reply = fmt.reply_ids(probe.candidates[0])
        logits = scorer.logits(prompt + reply)[len(prompt) - 1:-1].float()
        out.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(reply)[:, None]).sum().item())
    return out


def build_options(loaded, workdir: Path) -> dict[str, tuple[Path, Path | None]]:
    """name -> (GGUF file, run-time LoRA file or None)."""
    from moviechat_tui.core.backends import ggml_quant
    from moviechat_tui.core.backends.gguf_export import write_lora, write_model
    from moviechat_tui.core.backends.importance import input_statistics
    from moviechat_tui.core.backends.llamacpp_mix import PLANS, write_mixed
    from moviechat_tui.core.backends.llamacpp import quiet
    from moviechat_tui.core.backends.llamacpp_cache import quantize
    from moviechat_tui.core.specs import RUN_METADATA, OFFLINE_BASE, smollm2_gguf_path

    quiet()
    options: dict[str, tuple[Path, Path | None]] = {}
    source = Path(loaded.source)
    meta = json.loads((source / RUN_METADATA).read_text()) if (source / RUN_METADATA).is_file() else {}
    if meta.get("adapter") and meta.get("base") == OFFLINE_BASE:
        lora = write_lora(source, loaded.model.config, workdir / "adapter.gguf")
        options["base q4_1 + LoRA at run time"] = (smollm2_gguf_path(), lora)
        options["base q4_1 alone (no adapter)"] = (smollm2_gguf_path(), None)
    f32 = write_model(loaded.model, loaded.tokenizer, workdir / "f32.gguf")
    options["merged f32"] = (f32, None)
    for name in ("q8_0", "q5_1", "q4_1", "q4_0"):
        options[f"merged {name}"] = (quantize(f32, workdir / f"{name}.gguf", name), None)
    PLANS.update(EXTRA_PLANS)  # this process only
    for plan in PLANS:
        mixed = write_mixed(loaded.model, loaded.tokenizer, loaded.format, workdir / f"{plan}.gguf", plan)
        if mixed is not None:
            options[f"merged {plan} (GPTQ)"] = (mixed, None)
    if mixed is not None:
        statistics = input_statistics(loaded.model, loaded.format)

        def plain_iq4_nl(name, array):  # every projection rounded to nearest (importance-weighted)
            module = name.rsplit(".", 1)[0]
            if module in statistics and "embed" not in name:
                return ggml_quant.quantize(array, "iq4_nl", statistics[module][0]), "iq4_nl"
            return (ggml_quant.quantize(array, "q8_0"), "q8_0") if ggml_quant.can_quantize(array.shape) else (array, "f32")
        options["merged iq4_nl everywhere (nearest)"] = (
            write_model(loaded.model, loaded.tokenizer, workdir / "iq4_nl.gguf", plain_iq4_nl), None)
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model spec (default: the shipped model)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per option (medians reported)")
    parser.add_argument("--turns", type=int, default=10, help="history length of the timed prompt")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--save", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)

    from llama_cpp import Llama

    from moviechat_tui.core.backends import threads
    from moviechat_tui.core.backends.llamacpp import LlamaCppBackend
    from moviechat_tui.core.backends.quality import compare
    from moviechat_tui.core.loading import ModelLoadError, load_model

    try:
        loaded = load_model(args.model, backend="transformers")
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prompt = loaded.format.prompt_ids(history(args.turns))
    report = {"model": loaded.name, "turns": args.turns, "prompt_tokens": len(prompt), "new_tokens": args.new_tokens,
              "runs": args.runs, "threads": threads(), "options": {}}
    reference_answers = probe_answers(loaded.transformers, loaded.format)
    with tempfile.TemporaryDirectory() as workdir:
        options = build_options(loaded, Path(workdir))
        llms = {}
        for name, (path, lora) in options.items():
            llm = Llama(str(path), n_ctx=2048, n_batch=512, n_threads=threads(), n_threads_batch=threads(),
                        flash_attn=True, lora_path=str(lora) if lora else None, verbose=False)
            backend = LlamaCppBackend(llm, loaded.tokenizer, path, name, 2048)
            guard = compare(loaded.transformers, backend, loaded.format)
            answers = probe_answers(backend, loaded.format)
            llms[name] = llm
            report["options"][name] = {"size_mb": path.stat().st_size / 1e6, "perplexity_change_pct": guard.change_pct,
                                       "context_change_pct": guard.context_change_pct,
                                       "probe_answer_change_nats": statistics.mean(
                                           a - r for a, r in zip(answers, reference_answers)),
                                       "next_token_agreement": guard.next_token_agreement, "runs": []}
            llamacpp_run(llm, prompt, 4)  # warm-up
        for _ in range(args.runs):
            for name, llm in llms.items():
                report["options"][name]["runs"].append(llamacpp_run(llm, prompt, args.new_tokens))
        for name, option in report["options"].items():
            option["decode_tok_s"] = statistics.median(r["decode_tok_s"] for r in option["runs"])
            option["prefill_ms"] = statistics.median(r["ttft_ms"] for r in option["runs"])
        for llm in llms.values():
            llm.close()
    reference = report["options"].get("base q4_1 alone (no adapter)", {}).get("decode_tok_s")
    print(f"{report['model']}: {len(prompt)} prompt tokens, {args.new_tokens} new, medians of {args.runs}")
    print(f"{'option':40s} {'MB':>6s} {'ppl change':>11s} {'history':>8s} {'probes':>7s} {'agree':>6s} "
          f"{'decode tok/s':>13s} {'vs base q4_1':>13s} {'prefill ms':>11s}")
    for name, o in report["options"].items():
        ratio = f"x{o['decode_tok_s'] / reference:.2f}" if reference else ""
        o["decode_ratio_vs_base_q4_1"] = o["decode_tok_s"] / reference if reference else None
        print(f"{name:40s} {o['size_mb']:6.0f} {o['perplexity_change_pct']:+10.2f}% {o['context_change_pct']:+7.2f}% "
              f"{o['probe_answer_change_nats']:+7.3f} {o['next_token_agreement']:6.2f} "
              f"{o['decode_tok_s']:13.1f} {ratio:>13s} {o['prefill_ms']:11.0f}")
    report["seconds_at"] = time.time()
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

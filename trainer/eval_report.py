"""An evaluation's result for people: summary lines, a Markdown report, rich tables, where the report goes."""

from __future__ import annotations

import re
from pathlib import Path

from moviechat_tui.core.loading import RUN_METADATA

METRIC_LABELS = {
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "mean_words": "mean reply length (words)",
    "empty_rate": "empty replies",
    "repeat_rate": "repeats an earlier turn",
}
COLUMNS = (("model", "model"), ("ground_truth", "ground truth"), ("random_baseline", "random train reply"))


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.endswith("_rate"):
        return f"{value:.1%}"
    return f"{value:.2f}" if key == "mean_words" else f"{value:.3f}"


def _split_words(split: str) -> str:
    return "all splits" if split == "all" else f"the {split} split"


def summary_lines(result: dict) -> list[str]:
    lines = [
        f"model {result['model']} on {_split_words(result['split'])} of {result['corpus']} "
        f"({'with' if result['genres'] else 'without'} genre conditioning)",
        f"perplexity over reply tokens: {result['perplexity']:.2f} "
        f"({result['examples']:,} exchanges, {result['reply_tokens']:,} reply tokens)",
    ]
    g = result["genre_perplexity"]
    if g:
        lines.append(f"genre test: perplexity {g['true']:.2f} with the true genres, {g['shuffled']:.2f} with shuffled ones "
                     f"(shuffled / true = {g['ratio']:.3f})")
    elif result["genre_note"]:
        lines.append(f"genre test {result['genre_note']}")
    p = result.get("persona_perplexity")
    if p:
        lines.append(f"persona test: perplexity {p['true']:.2f} with the true characters and film, {p['shuffled']:.2f} "
                     f"with another conversation's (shuffled / true = {p['ratio']:.3f})")
    probes = result.get("probes")
    if probes:
        lines.append(f"context probes ({probes['probes']} conversations x {probes['seeds']} sampled replies): "
                     f"names the fact in {probes['recall']:.1%} of replies, its own persona name in "
                     f"{probes['own_name']:.1%}; forced choice {probes['forced_choice']:.1%}")
    s = result["samples"]
    if s is None:
        lines.append("sampled replies: skipped (--samples 0)")
    else:
        lines.append(f"sampled replies: {s['n']} contexts, seed {s['seed']}, the engine's default decoding")
    return lines


def markdown_report(result: dict, examples: int = 5) -> str:
    out = [f"# Evaluation: {result['model']} ({result['split']})", ""]
    out += [f"- {line}" for line in summary_lines(result)]
    s = result["samples"]
    if s:
        out += ["", "| metric | " + " | ".join(label for _, label in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
        for key, label in METRIC_LABELS.items():
            cells = [_cell(key, s[column][key] if s[column] else None) for column, _ in COLUMNS]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        if s["replies"][:examples]:
            out += ["", "Sample replies:", "", "| last context turn | ground truth | model |", "|---|---|---|"]
            for r in s["replies"][:examples]:
                cells = (r["context"][-1] if r["context"] else "", r["reference"], r["model"])
                out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(out) + "\n"


def print_report(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for line in summary_lines(result):
        console.print(line, highlight=False)
    s = result["samples"]
    if s:
        table = Table(title=f"Sampled replies ({s['n']} held-out contexts)")
        table.add_column("metric")
        for _, label in COLUMNS:
            table.add_column(label, justify="right")
        for key, label in METRIC_LABELS.items():
            table.add_row(label, *(_cell(key, s[column][key] if s[column] else None) for column, _ in COLUMNS))
        console.print(table)


def default_report_path(model_spec: str, result: dict) -> Path:
    """Next to the model for a trainer run directory, else eval-<model>-<split>.md in the current directory."""
    spec_path = Path(model_spec).expanduser()
    if spec_path.is_dir() and (spec_path / RUN_METADATA).is_file():
        return spec_path / f"eval-{result['split']}.md"
    name = re.sub(r"[^\w.-]+", "-", Path(result["model_source"]).name if spec_path.is_dir() else model_spec).strip("-")
    return Path(f"eval-{name or 'model'}-{result['split']}.md")

"""What the conversion-cache tests share (test_fast_cache.py for CTranslate2, test_llamacpp_cache.py
for llama.cpp): counting the real conversions, and the folders in a backend's cache."""

from __future__ import annotations

from moviechat_tui.core.backends.quality import QualityReport
from moviechat_tui.core.paths import cache_dir


def guard_report(change_pct: float, context_change_pct: float = 0.0) -> QualityReport:
    """A quality guard's result with these two figures (for tests that choose what the guard says)."""
    return QualityReport(prompts=1, reply_tokens=1, perplexity_reference=1.0, perplexity_candidate=1.0,
                         change_pct=change_pct, next_token_agreement=1.0, context_prompts=1,
                         context_reply_tokens=1, context_change_pct=context_change_pct)


def count_conversions(monkeypatch, cache_module) -> list:
    """The target folder of every conversion `cache_module` makes from now on (the real ones still run)."""
    calls = []
    real = cache_module._convert

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_convert", counting)
    return calls


def converted_dirs(folder: str) -> list[str]:
    """The copies (and remembered failures) in cache_dir()/`folder`, by name."""
    root = cache_dir() / folder
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

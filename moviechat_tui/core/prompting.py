"""How the prompt for the next reply is planned: one place for the engine, the evaluation and the probes."""

from __future__ import annotations

from .dialogue import Conditioning, FittedPrompt, Turn, fit_prompt
from .loading import LoadedModel
from .settings import GenerationSettings

# CPU prompt processing grows with the prompt: a chat keeps at most this many tokens of history.
MAX_CHAT_CONTEXT = 1024


def prompt_budget(loaded: LoadedModel, settings: GenerationSettings) -> int:
    """Prompt tokens a reply may use: the window (capped) less the reply's budget; the history gets at least half."""
    window = min(loaded.context_window, MAX_CHAT_CONTEXT)
    return window - min(settings.max_new_tokens, window // 2)


def plan_prompt(loaded: LoadedModel, history: list[Turn], conditioning: Conditioning,
                settings: GenerationSettings) -> tuple[FittedPrompt, GenerationSettings]:
    """The prompt for the next reply and the settings to generate it with: what every reply of the
    engine, the evaluation and the probes is made from. The oldest turns make room; the reply never
    runs past the model's positions."""
    prompt = fit_prompt(loaded.format, history, prompt_budget(loaded, settings), conditioning)
    room = loaded.context_window - len(prompt.ids)
    return prompt, settings.replace(max_new_tokens=min(settings.max_new_tokens, room))

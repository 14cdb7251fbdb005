"""How a conversation becomes model input ids: the one source of truth.

The chat engine builds its prompts with `DialogueFormat.prompt_ids` and the
trainer builds its examples with `training_example`, which is `prompt_ids`
followed by `reply_ids`. So the ids a model is trained on and the ids it is
prompted with at chat time are the same, token for token, up to the reply.

Two layouts, picked from the tokenizer by `format_for`:

* PlainFormat (GPT-2 style tokenizers, no chat template). Each turn is a
  speaker header, the text, and the end-of-turn token (GPT-2's <|endoftext|>):

      Movie: 10 Things I Hate About You (1999)\\n   (each preamble line only when
      Genres: comedy, romance\\n                   the conditioning has that part)
      Bot is Bianca. User is Cameron.\\n
      User: Where are you going?<|endoftext|>
      Bot: Out.<|endoftext|>
      User: Out where?<|endoftext|>
      Bot:                                (the prompt ends here)

  Segments are tokenized separately and concatenated, so a turn's ids never
  depend on its neighbours.

* ChatTemplateFormat (tokenizers with a chat template, e.g. SmolLM2). The
  conversation is rendered by the tokenizer's own template with a system
  message that carries the conditioning (who the bot plays, whom it talks to,
  the film and its genres; `system_prompt`); the end-of-turn token is the
  template's (<|im_end|> for ChatML).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

USER = "user"
BOT = "bot"
ROLES = (USER, BOT)

# Tokens that end an assistant turn in common chat templates, most specific first.
_TEMPLATE_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@dataclass(frozen=True)
class Turn:
    role: str  # USER or BOT
    text: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {ROLES}")


@dataclass(frozen=True)
class Conditioning:
    """What steers a reply besides the history: who speaks, to whom, in which film.

    Every part is optional; an empty Conditioning is a chat with no persona. Names and
    titles are shown as given (the cast file stores them title-cased, e.g. "Bianca",
    "10 Things I Hate About You"). Stored with a conversation as `to_dict()`.
    """

    character: str = ""  # the bot's character
    partner: str = ""  # the character the user plays
    movie: str = ""  # the film's title
    year: int | None = None
    genres: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("character", "partner", "movie"):
            object.__setattr__(self, name, " ".join(str(getattr(self, name) or "").split()))
        cleaned = (" ".join(str(g).split()).lower() for g in (self.genres or ()))
        object.__setattr__(self, "genres", tuple(g for g in cleaned if g))
        if self.year is not None and not isinstance(self.year, int):
            raise ValueError(f"year must be an integer, not {self.year!r}")

    @classmethod
    def from_genres(cls, genres: Sequence[str] | None) -> "Conditioning":
        return cls(genres=tuple(genres or ()))

    @classmethod
    def from_dict(cls, data: dict | None) -> "Conditioning":
        """From what `to_dict` wrote (unknown keys ignored, so older rows with only genres still load)."""
        data = data or {}
        year = data.get("year")
        return cls(character=data.get("character") or "", partner=data.get("partner") or "",
                   movie=data.get("movie") or "", year=int(year) if year not in (None, "") else None,
                   genres=tuple(data.get("genres") or ()))

    def to_dict(self) -> dict:
        data = {"character": self.character, "partner": self.partner, "movie": self.movie,
                "year": self.year, "genres": list(self.genres)}
        return {k: v for k, v in data.items() if v not in ("", None, [])} | {"genres": list(self.genres)}

    @property
    def has_persona(self) -> bool:
        return bool(self.character or self.partner or self.movie)

    @property
    def film(self) -> str:
        """"Title (1999)", "Title", or "" without a film."""
        if not self.movie:
            return ""
        return f"{self.movie} ({self.year})" if self.year else self.movie

    def describe(self) -> str:
        """One line for headers, lists and exports: "Bianca (to Cameron) · 10 Things I Hate About You (1999) · comedy"."""
        who = self.character or ("someone" if self.partner else "")
        if who and self.partner:
            who += f" (to {self.partner})"
        return " · ".join(part for part in (who, self.film, ", ".join(self.genres)) if part)


NO_CONDITIONING = Conditioning()


def system_prompt(conditioning: Conditioning) -> str:
    """The system message of chat-template models (and the description of the task).

    Without a persona the text is exactly what the first models were trained with."""
    c = conditioning
    if not c.has_persona:
        text = "You are a character in a movie. Stay in character and reply with one short line of dialogue."
    else:
        text = f"You are {c.character or 'a character'} in {'the movie ' + c.film if c.film else 'a movie'}"
        text += f", talking with {c.partner}." if c.partner else "."
        text += " Stay in character and reply with one line of dialogue."
    if c.genres:
        text += f" The movie's genres: {', '.join(c.genres)}."
    return text


def plain_preamble(conditioning: Conditioning) -> str:
    """The lines before the first turn in the plain (GPT-2) layout; "" without conditioning."""
    c = conditioning
    lines = []
    if c.film:
        lines.append(f"Movie: {c.film}")
    if c.genres:
        lines.append(f"Genres: {', '.join(c.genres)}")
    if c.character or c.partner:
        lines.append(" ".join(part for part in (f"Bot is {c.character}." if c.character else "",
                                                f"User is {c.partner}." if c.partner else "") if part))
    return "".join(line + "\n" for line in lines)


class DialogueFormat(ABC):
    """Turns (history, conditioning) into ids; see the module docstring."""

    name: str

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    @property
    @abstractmethod
    def end_of_turn_id(self) -> int:
        """The token that ends every turn; generation stops on it."""

    @abstractmethod
    def prompt_ids(self, turns: Sequence[Turn], conditioning: Conditioning = NO_CONDITIONING) -> list[int]:
        """Ids of the history followed by the bot's turn header: what the model continues."""

    def reply_ids(self, text: str) -> list[int]:
        """Ids of a bot reply as trained on: its text, then the end-of-turn token."""
        return self._encode(self._reply_prefix() + text) + [self.end_of_turn_id]

    def _reply_prefix(self) -> str:
        return ""

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


class PlainFormat(DialogueFormat):
    name = "plain"
    HEADERS = {USER: "User:", BOT: "Bot:"}

    @property
    def end_of_turn_id(self) -> int:
        return self.tokenizer.eos_token_id

    def _reply_prefix(self) -> str:
        # The header ends with ':'; the text follows after one space, as in "Bot: Out."
        return " "

    def prompt_ids(self, turns: Sequence[Turn], conditioning: Conditioning = NO_CONDITIONING) -> list[int]:
        preamble = plain_preamble(conditioning)
        ids: list[int] = self._encode(preamble) if preamble else []
        for turn in turns:
            ids += self._encode(self.HEADERS[turn.role]) + self._encode(" " + turn.text) + [self.end_of_turn_id]
        return ids + self._encode(self.HEADERS[BOT])


class ChatTemplateFormat(DialogueFormat):
    name = "chat-template"

    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer)
        vocab = tokenizer.get_vocab()
        eot = next((tok for tok in _TEMPLATE_END_OF_TURN if tok in vocab), None)
        self._end_of_turn_id = vocab[eot] if eot else tokenizer.eos_token_id

    @property
    def end_of_turn_id(self) -> int:
        return self._end_of_turn_id

    def prompt_ids(self, turns: Sequence[Turn], conditioning: Conditioning = NO_CONDITIONING) -> list[int]:
        messages = [{"role": "system", "content": system_prompt(conditioning)}]
        messages += [{"role": "user" if t.role == USER else "assistant", "content": t.text} for t in turns]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._encode(text)


def format_for(tokenizer) -> DialogueFormat:
    """The layout a tokenizer is used with: its chat template if it has one."""
    if getattr(tokenizer, "chat_template", None):
        return ChatTemplateFormat(tokenizer)
    return PlainFormat(tokenizer)


# --- fitting a history into the context window -------------------------------


@dataclass
class FittedPrompt:
    ids: list[int]
    turns: list[Turn]  # the turns that made it in (the newest always does)
    dropped_turns: int = 0  # oldest turns left out
    cut_message: bool = False  # the newest turn alone was too long and was cut
    notices: list[str] = field(default_factory=list)


def fit_prompt(
    fmt: DialogueFormat,
    turns: Sequence[Turn],
    max_prompt_tokens: int,
    conditioning: Conditioning = NO_CONDITIONING,
) -> FittedPrompt:
    """Prompt ids for `turns`, dropping the oldest turns to fit `max_prompt_tokens`.

    The newest turn is never dropped: if it alone does not fit, its text is cut
    (keeping its end, where a question usually is) and a notice says so.
    """
    turns = list(turns)
    if not turns:
        raise ValueError("a prompt needs at least one turn")
    start = 0
    ids = fmt.prompt_ids(turns, conditioning)
    while len(ids) > max_prompt_tokens and start < len(turns) - 1:
        start += 1
        ids = fmt.prompt_ids(turns[start:], conditioning)
    kept = turns[start:]
    fitted = FittedPrompt(ids=ids, turns=kept, dropped_turns=start)
    if start:
        fitted.notices.append(f"{start} older turn(s) left out to fit the model's context window")
    if len(ids) > max_prompt_tokens:
        last = kept[-1]
        body = fmt._encode(last.text)
        room = len(body) - (len(ids) - max_prompt_tokens)
        while room > 0:
            text = fmt.decode(body[-room:])
            candidate = fmt.prompt_ids([Turn(last.role, text)], conditioning)
            if len(candidate) <= max_prompt_tokens:
                fitted.ids, fitted.turns, fitted.cut_message = candidate, [Turn(last.role, text)], True
                break
            room -= max(1, len(candidate) - max_prompt_tokens)
        else:
            raise ValueError(
                f"the context window ({max_prompt_tokens} prompt tokens) is too small for even an empty turn"
            )
        fitted.notices.append(
            f"your message was {len(body)} tokens, more than fits; only its last {room} tokens were used"
        )
    return fitted


def next_turn_prefix(
    fmt: DialogueFormat,
    turns: Sequence[Turn],
    max_prompt_tokens: int,
    conditioning: Conditioning = NO_CONDITIONING,
) -> list[int]:
    """The ids that the prompt for the user's next message starts with, whatever it says.

    The prompts for two different next messages agree up to where the text begins: the
    history through the last reply and the opening of a user turn. The engine has the model
    read them ahead of time (generation.warm_prefix). A next message that changes the fit
    (drops older turns) simply won't start with these ids; users of the prefix check.
    """
    a = fit_prompt(fmt, [*turns, Turn(USER, "Yes.")], max_prompt_tokens, conditioning).ids
    b = fit_prompt(fmt, [*turns, Turn(USER, "No!")], max_prompt_tokens, conditioning).ids
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


# --- training examples ---------------------------------------------------------

IGNORE_INDEX = -100  # labels with this value do not count in the loss


def exchange_turns(utterances: Sequence[str]) -> list[Turn]:
    """Roles for a stretch of movie dialogue whose last line is the reply to learn.

    The last line is the bot's; going backwards, speakers alternate.
    """
    n = len(utterances)
    return [Turn(BOT if (n - 1 - i) % 2 == 0 else USER, text) for i, text in enumerate(utterances)]


@dataclass
class TrainingExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX over the prompt, the reply ids over the reply
    dropped_turns: int = 0

    @property
    def prompt_length(self) -> int:
        return sum(1 for label in self.labels if label == IGNORE_INDEX)


def training_example(
    fmt: DialogueFormat,
    context: Sequence[Turn],
    reply: str,
    max_length: int,
    conditioning: Conditioning = NO_CONDITIONING,
) -> TrainingExample | None:
    """Prompt ids (exactly what chat would send) + reply ids; loss on the reply only.

    The context is cut from its oldest turn to fit `max_length`. Returns None
    when even the reply with an empty context does not fit.
    """
    reply_ids = fmt.reply_ids(reply)
    if context:
        room = max_length - len(reply_ids)
        try:
            prompt = fit_prompt(fmt, context, room, conditioning) if room > 0 else None
        except ValueError:  # not even an empty context turn fits beside this reply
            prompt = None
        if prompt is None or prompt.cut_message or len(prompt.ids) > room:
            return None
        prompt_ids, dropped = prompt.ids, prompt.dropped_turns
    else:
        prompt_ids, dropped = fmt.prompt_ids([], conditioning), 0
    if len(prompt_ids) + len(reply_ids) > max_length:
        return None
    return TrainingExample(
        input_ids=prompt_ids + reply_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + reply_ids,
        dropped_turns=dropped,
    )

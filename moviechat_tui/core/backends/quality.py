"""The quality guard: how much a backend raises the perplexity of fixed reference replies.

`compare(reference, candidate, fmt)` scores two sets of replies teacher-forced with both (anything
with `logits(ids)`, see Backend):
  CALIBRATION          everyday replies to a line or two: the register, the language
  context_calibration  replies that name a fact the user stated 1-4 exchanges earlier: the use of
                       the history, which a copy can lose while everyday replies barely move (4-bit
                       weights did: +1.8 % on the first, +4.7 % on this one, docs/benchmarks.md)
A faster copy (llama.cpp's q8_0, CTranslate2's int8) is kept only while it raises both
perplexities by at most QUALITY_LIMIT_PCT (`QualityReport.passes`); a copy asked for by name
(MOVIECHAT_GGUF_WEIGHTS, MOVIECHAT_FAST_COMPUTE) is measured the same way and its figures shown.
bench/inference.py reports the same measures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

QUALITY_LIMIT_PCT = 2.0  # a faster copy is kept only while it raises each perplexity by at most this much

# Short exchanges (written for this check) whose replies are scored.
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

# Replies that need the history (written for this check; the evaluation's context probes in
# trainer/probes.py use other sentences and values): (the user's statement, their question, the reply).
CONTEXT_FACTS = [
    ("My brother's name is Augustus.", "What's my brother called?", "Augustus."),
    ("I keep a parrot called Winston.", "What's my parrot's name?", "Winston."),
    ("I grew up in Fresno.", "Where did I grow up?", "Fresno."),
    ("I fix elevators for a living.", "What do I fix?", "Elevators."),
    ("There's a harpoon in my trunk.", "What's in my trunk?", "A harpoon."),
    ("My wife's name is Delphine.", "What's my wife's name?", "Delphine."),
    ("I'm staying in room 417.", "Which room am I in?", "Room 417."),
    ("My horse is called Brimstone.", "What's my horse called?", "Brimstone."),
    ("The password is marigold.", "What's the password?", "Marigold."),
    ("I work nights as a projectionist.", "What's my night job?", "Projectionist."),
    ("My sister lives in Tallahassee.", "Where does my sister live?", "Tallahassee."),
    ("I lost a silver thimble this morning.", "What did I lose?", "A silver thimble."),
    ("My boss is a man named Prendergast.", "Who's my boss?", "Prendergast."),
    ("Our boat is called the Albatross.", "What's our boat called?", "The Albatross."),
    ("I drive a yellow Studebaker.", "What do I drive?", "A yellow Studebaker."),
    ("I hid the money in the freezer.", "Where's the money?", "In the freezer."),
    ("My son plays the oboe.", "What does my son play?", "The oboe."),
    ("The meeting is in Kalamazoo.", "Where is the meeting?", "Kalamazoo."),
    ("My goldfish is named Napoleon.", "What's my goldfish's name?", "Napoleon."),
    ("I'm allergic to walnuts.", "What am I allergic to?", "Walnuts."),
    ("My grandmother was born in Bratislava.", "Where was my grandmother born?", "Bratislava."),
    ("I collect antique doorknobs.", "What do I collect?", "Antique doorknobs."),
    ("The train leaves from platform nine.", "Which platform is the train?", "Platform nine."),
    ("My lawyer is called Mrs. Okonkwo.", "Who's my lawyer?", "Mrs. Okonkwo."),
]
CONTEXT_ACKNOWLEDGEMENTS = ("Okay.", "Is that right?", "Huh.", "Good to know.")
CONTEXT_SMALL_TALK = (
    ("It's cold in here.", "Close the window, then."),
    ("Want some more pie?", "I couldn't eat another bite."),
    ("The phone's been ringing all day.", "Let it ring."),
    ("You look tired.", "Long week."),
    ("Is that thunder?", "Sounds like it."),
    ("I need a haircut.", "You really do."),
    ("Who left the lights on?", "Not me."),
    ("The radio says more snow.", "Great. Just great."),
    ("Do you smell smoke?", "It's the neighbors' grill."),
    ("Pass the salt, would you?", "Here."),
)


def context_calibration() -> list[tuple[list[str], str]]:
    """Each fact twice: stated, acknowledged, 0-3 exchanges of small talk, asked for; (context, reply)."""
    out = []
    for i, (statement, question, answer) in enumerate(CONTEXT_FACTS):
        for gap in (i % 4, (i + 2) % 4):
            lines = [statement, CONTEXT_ACKNOWLEDGEMENTS[(i + gap) % len(CONTEXT_ACKNOWLEDGEMENTS)]]
            for k in range(gap):
                lines += CONTEXT_SMALL_TALK[(i + 3 * k + gap) % len(CONTEXT_SMALL_TALK)]
            out.append((lines + [question], answer))
    return out


@dataclass
class QualityReport:
    prompts: int
    reply_tokens: int
    perplexity_reference: float
    perplexity_candidate: float
    change_pct: float  # how much the candidate raises the everyday replies' perplexity over the reference
    next_token_agreement: float  # share of reply positions where both rank the same token first
    context_prompts: int = 0
    context_reply_tokens: int = 0
    context_change_pct: float = 0.0  # the same for the replies that need the history

    @property
    def worst_change_pct(self) -> float:
        return max(self.change_pct, self.context_change_pct)

    @property
    def passes(self) -> bool:
        return self.worst_change_pct <= QUALITY_LIMIT_PCT

    def to_dict(self) -> dict:
        return asdict(self)


# Where a conversion's metadata keeps each measure: <prefix><weights> -> percent.
MEASURES = {"perplexity_change_pct_": "reply perplexity",
            "context_change_pct_": "the perplexity of replies that use the history"}


def guard_metadata(report: QualityReport, weights: str) -> dict:
    """Both measures of one copy, keyed by its weights, for the conversion's metadata (None: no
    exchange of that set fits the model's window, so nothing was measured)."""
    return {f"perplexity_change_pct_{weights}": report.change_pct if report.prompts else None,
            f"context_change_pct_{weights}": report.context_change_pct if report.context_prompts else None}


def guard_figures(meta: dict) -> dict:
    """The quality guard's figures in a conversion's metadata."""
    return {key: value for key, value in meta.items() if key.startswith(tuple(MEASURES))}


def guard_note(figures: dict, kept: str) -> str:
    """Why `kept` and not a faster copy (each measure a rejected copy raised past the limit), or
    what `kept` itself costs past the limit (it was asked for by name)."""
    parts, own = [], []
    for prefix, measure in MEASURES.items():
        raised = [f"{key[len(prefix):]} by {pct:.1f}%" for key, pct in figures.items()
                  if key.startswith(prefix) and key[len(prefix):] != kept and pct is not None
                  and pct > QUALITY_LIMIT_PCT]
        if raised:
            parts.append(f"raised {measure}: {', '.join(raised)}")
        pct = figures.get(f"{prefix}{kept}")
        if pct is not None and pct > QUALITY_LIMIT_PCT:
            own.append(f"{measure} by {pct:.1f}%")
    if own and not parts:  # the only copy measured, and past the limit: it was asked for by name
        return f"{kept}, as asked, raises {' and '.join(own)} (the guard's limit is {QUALITY_LIMIT_PCT:g}%)"
    if not parts:
        return ""
    itself = f"; {kept} itself raises {' and '.join(own)}" if own else ""
    return f"{'; '.join(parts)} (limit {QUALITY_LIMIT_PCT:g}%): {kept} instead{itself}"


def _prompts(fmt, exchanges) -> list[tuple[list[int], int]]:
    from ..dialogue import exchange_turns

    out = []
    for context, reply in exchanges:
        prompt = fmt.prompt_ids(exchange_turns([*context, reply])[:-1])  # the reply is the bot's
        out.append((prompt + fmt.reply_ids(reply), len(prompt)))
    return out


def calibration_prompts(fmt) -> list[tuple[list[int], int]]:
    """(prompt ids + reference reply ids, where the reply starts) for each CALIBRATION exchange."""
    return _prompts(fmt, CALIBRATION)


def context_prompts(fmt) -> list[tuple[list[int], int]]:
    """The same for each context_calibration exchange."""
    return _prompts(fmt, context_calibration())


def compare(reference, candidate, fmt, max_tokens: int | None = None) -> QualityReport:
    """Score both sets of replies with both (objects with `logits(ids)`); exchanges longer than
    `max_tokens` (a model with a short window) are left out."""
    def fitting(examples):
        return [example for example in examples if max_tokens is None or len(example[0]) <= max_tokens]

    everyday, agree = _score(reference, candidate, fitting(calibration_prompts(fmt)))
    history, _ = _score(reference, candidate, fitting(context_prompts(fmt)))
    per_token = max(everyday.tokens, 1)  # none fit a tiny window: nothing measured, nothing changed
    return QualityReport(
        prompts=everyday.prompts, reply_tokens=everyday.tokens,
        perplexity_reference=math.exp(everyday.nll_reference / per_token),
        perplexity_candidate=math.exp(everyday.nll_candidate / per_token),
        change_pct=everyday.change_pct, next_token_agreement=agree / per_token if everyday.tokens else 1.0,
        context_prompts=history.prompts, context_reply_tokens=history.tokens, context_change_pct=history.change_pct,
    )


@dataclass
class _Scores:
    prompts: int
    tokens: int
    nll_reference: float
    nll_candidate: float

    @property
    def change_pct(self) -> float:
        return (math.exp((self.nll_candidate - self.nll_reference) / self.tokens) - 1) * 100 if self.tokens else 0.0


def _score(reference, candidate, examples) -> tuple[_Scores, int]:
    """Summed negative log-likelihood of the replies under each, and how often their top tokens agree."""
    import torch

    scores, agree = _Scores(len(examples), 0, 0.0, 0.0), 0
    for ids, start in examples:
        targets = torch.tensor(ids[start:])
        ref = _reply_logits(reference, ids, start)
        cand = _reply_logits(candidate, ids, start)
        scores.nll_reference -= torch.log_softmax(ref, -1).gather(1, targets[:, None]).sum().item()
        scores.nll_candidate -= torch.log_softmax(cand, -1).gather(1, targets[:, None]).sum().item()
        agree += (ref.argmax(-1) == cand.argmax(-1)).sum().item()
        scores.tokens += len(targets)
    return scores, agree


def _reply_logits(scorer, ids: Sequence[int], start: int):
    """The logits that predict the reply's tokens (positions start-1 .. len-2), float32 on the CPU."""
    return scorer.logits(ids)[start - 1:-1].float().cpu()

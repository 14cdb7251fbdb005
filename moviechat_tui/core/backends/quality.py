"""The quality guard: how much a backend raises the perplexity of fixed reference replies.

`compare(reference, candidate, fmt)` scores CALIBRATION's replies teacher-forced with both
(anything with `logits(ids)`, see Backend): the perplexity of each, the change in percent and how
often their likeliest next token agrees. A CTranslate2 conversion is int8 only while the change is
at most QUALITY_LIMIT_PCT (ct2_cache.py); bench/inference.py reports the same measure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

QUALITY_LIMIT_PCT = 2.0  # int8 is kept only while it raises reply perplexity by at most this much

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


@dataclass
class QualityReport:
    prompts: int
    reply_tokens: int
    perplexity_reference: float
    perplexity_candidate: float
    change_pct: float  # how much the candidate raises perplexity over the reference
    next_token_agreement: float  # share of reply positions where both rank the same token first

    def to_dict(self) -> dict:
        return asdict(self)


def calibration_prompts(fmt) -> list[tuple[list[int], int]]:
    """(prompt ids + reference reply ids, where the reply starts) for each CALIBRATION exchange."""
    from ..dialogue import BOT, USER, Turn

    out = []
    for context, reply in CALIBRATION:
        turns = [Turn(USER if (len(context) - 1 - i) % 2 == 0 else BOT, text) for i, text in enumerate(context)]
        prompt = fmt.prompt_ids(turns)
        out.append((prompt + fmt.reply_ids(reply), len(prompt)))
    return out


def compare(reference, candidate, fmt) -> QualityReport:
    """Score CALIBRATION's replies with both (objects with `logits(ids)`)."""
    import torch

    nll_ref = nll_candidate = 0.0
    count = agree = 0
    examples = calibration_prompts(fmt)
    for ids, start in examples:
        targets = torch.tensor(ids[start:])
        ref = _reply_logits(reference, ids, start)
        cand = _reply_logits(candidate, ids, start)
        nll_ref -= torch.log_softmax(ref, -1).gather(1, targets[:, None]).sum().item()
        nll_candidate -= torch.log_softmax(cand, -1).gather(1, targets[:, None]).sum().item()
        agree += (ref.argmax(-1) == cand.argmax(-1)).sum().item()
        count += len(targets)
    return QualityReport(
        prompts=len(examples), reply_tokens=count,
        perplexity_reference=math.exp(nll_ref / count), perplexity_candidate=math.exp(nll_candidate / count),
        change_pct=(math.exp((nll_candidate - nll_ref) / count) - 1) * 100,
        next_token_agreement=agree / count,
    )


def _reply_logits(scorer, ids: Sequence[int], start: int):
    """The logits that predict the reply's tokens (positions start-1 .. len-2), float32 on the CPU."""
    return scorer.logits(ids)[start - 1:-1].float().cpu()

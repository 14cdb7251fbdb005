"""The importance matrix: which input columns of each weight matter, so 4-bit rounding spares them.

llama.cpp quantizes a row better when it knows how large each input feature tends to be: with
these weights its quantizer picks the block scales that minimise sum_j E[x_j^2] (w_j - q_j)^2, the
error the layer's output actually sees, instead of the plain weight error (this is what its
`llama-imatrix` tool computes). `input_statistics(model, fmt)` gives that statistic, E[x_j^2] of
every Linear's input over IMPORTANCE_DIALOGUES, run through the model in memory; with it, where
asked, the full second moment E[x x^T] that GPTQ rounding needs (gptq.py).

The dialogues are written for this purpose and are *not* the quality guard's replies
(quality.CALIBRATION): the guard that judges the quantized model never saw the text it was tuned on.
"""

from __future__ import annotations

from typing import Callable

# Short scenes in the register the models are tuned for; each is read as one history.
IMPORTANCE_DIALOGUES = [
    ["Hey. You made it.", "Barely. The roads are a mess out there.", "Sit down, I'll get you a coffee."],
    ["What's in the box?", "None of your business.", "It's ticking, Harry. Boxes shouldn't tick."],
    ["I can't do this anymore.", "Sure you can. One more night.", "That's what you said last week."],
    ["Mom, have you seen my jacket?", "Check the car. You never take anything inside.", "Found it!"],
    ["The plane leaves in an hour.", "Then we'd better start driving.", "What about the kids?"],
    ["Who's there?", "It's me. Open the door.", "How do I know it's really you?"],
    ["Congratulations, Doctor. It's a girl.", "A girl? Are you sure?", "Quite sure. Ten fingers, ten toes."],
    ["Nice car.", "It was my father's. He never let me drive it.", "And now?", "Now he's not here to stop me."],
    ["Do you know what time it is?", "Late. I know. I'm sorry.", "Where were you?"],
    ["We found something in the lake, sheriff.", "Something or somebody?", "You'd better come see."],
    ["I've got two tickets to the game on Saturday.", "I work Saturdays.", "Call in sick."],
    ["Why are you always so angry?", "I'm not angry. I'm tired.", "Tired of what?", "Of you asking me that."],
    ["Ladies and gentlemen, the captain has turned on the seat belt sign.", "Is that bad?", "It's just wind."],
    ["You want some advice, kid?", "Not really.", "Never play cards with a man named Doc."],
    ["The money was here yesterday.", "Well, it's not here today.", "Then who took it?"],
    ["How was school?", "Fine.", "Just fine?", "We learned about volcanoes. Can I go now?"],
    ["I'm going to ask her to marry me.", "Tonight?", "Tonight. I already bought the ring."],
    ["Stay low and keep quiet.", "How many of them are there?", "Too many. Follow me."],
    ["This is the best pizza in the city.", "You say that about every pizza.", "And I'm always right."],
    ["Your Honor, the witness is lying.", "Sit down, counselor.", "But Your Honor..."],
    ["Is anybody hurt?", "Johnny hit his head pretty hard.", "Get him in the truck. We're leaving."],
    ["I wrote you a letter every day.", "I never got a single one.", "Then somebody kept them from you."],
    ["Can I help you find something?", "A gift for my wife. Our anniversary.", "How many years?", "Twenty."],
    ["The storm's getting worse.", "We can make it to the lighthouse.", "In this? You're crazy."],
]


def calibration_ids(fmt, lines) -> list[int]:
    """One dialogue as the chat feeds it: the earlier lines as the prompt, the last as the bot's reply
    (the layout of a training example; dialogue.exchange_turns gives the roles)."""
    from ..dialogue import exchange_turns

    return fmt.prompt_ids(exchange_turns(lines)[:-1]) + fmt.reply_ids(lines[-1])


def input_statistics(model, fmt, second_moments: Callable[[str], bool] = lambda name: False) -> dict:
    """{weight module name: (E[x_j^2] as float32 numpy (in_features,), E[x x^T] as float64 torch
    (in, in) or None)} of each Linear's (GPT-2: Conv1D's) input over the dialogues; the full second
    moment only where `second_moments(name)` (gptq.py needs it; it is in_features^2 numbers)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    modules = {name: module for name, module in model.named_modules()
               if isinstance(module, (torch.nn.Linear, Conv1D)) and not name.endswith("lm_head")}
    squares: dict[str, torch.Tensor] = {}
    products: dict[str, torch.Tensor] = {}
    rows = dict.fromkeys(modules, 0)

    def record(name):
        def hook(_module, inputs, _output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()  # (tokens, in_features)
            squares[name] = squares.get(name, 0) + (x * x).sum(0)
            if second_moments(name):
                products[name] = products.get(name, 0) + x.T @ x
            rows[name] += x.shape[0]
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            for lines in IMPORTANCE_DIALOGUES:
                model(torch.tensor([calibration_ids(fmt, lines)], device=model.device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: ((squares[name] / rows[name]).float().cpu().numpy(),
                   products[name].cpu() / rows[name] if name in products else None)
            for name in squares}

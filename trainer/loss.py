"""The training loss, computed only where it is defined: at reply tokens.

A causal LM's own loss projects every position onto the vocabulary (b*s*V
logits) and then throws most of it away: prompt positions carry label -100.
For a dialogue the prompt (system line, genres, earlier turns) is most of the
sequence, and the projection is the single biggest matmul of a small model
(GPT-2: 768 x 50,257; SmolLM2-135M: 576 x 49,152). So we run the decoder, keep
the hidden states of the positions whose next token is a reply token, and
project only those:

    hidden  = decoder(input_ids)                  # (b, s, h)
    targets = labels[:, 1:]                        # (b, s-1)  position t predicts t+1
    keep    = targets != -100                      # (b, s-1)
    logits  = lm_head(hidden[:, :-1][keep])        # (n, V)    n = reply tokens, not b*s
    loss    = cross_entropy(logits, targets[keep], reduction="sum") / num_items

The maths is the model's own loss (tests compare the two and their gradients
with torch.allclose); only the discarded work is gone. It is exact for models
whose head is a plain projection of the last hidden state (GPT-2, Llama family);
other models fall back to their own logits (`supports_reply_loss`). Evaluation
(trainer.perplexity.reply_nll) scores replies with the same `reply_logits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moviechat_tui.core.dialogue import IGNORE_INDEX


def _causal_lm(model):
    """The *ForCausalLM under a peft wrapper (LoRA layers are injected in place, so they still run)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_reply_loss(model) -> bool:
    lm = _causal_lm(model)
    config = getattr(lm, "config", None)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    # A logit soft-cap or scaling (Gemma 2, Cohere, ...) would sit between head and loss: not covered.
    scaled = any(getattr(config, name, None) not in (None, 1, 1.0)
                 for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    return isinstance(head, torch.nn.Linear) and not scaled and lm.get_decoder() is not lm


def reply_logits(model, input_ids, attention_mask, keep) -> torch.Tensor:
    """Logits (n, V) predicting the kept positions (keep: (b, s-1)); the head runs on those only.
    A head with extra maths (see supports_reply_loss) gets the model's own logits, then the cut."""
    if not supports_reply_loss(model):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][keep]
    lm = _causal_lm(model)
    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).last_hidden_state                # (b, s, h)
    return lm.get_output_embeddings()(hidden[:, :-1][keep])                     # (n, V)


def reply_loss(model, inputs: dict, num_items_in_batch=None, kl_weight: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy over reply tokens / num_items_in_batch (or their count in this batch).

    With `kl_weight` (a peft model only), plus kl_weight x KL(base || tuned) summed over the same
    tokens, the base being the model with its adapter turned off: the tuned model is pulled to
    keep every continuation the base finds likely (such as naming a fact from earlier turns)
    while it learns the films' register."""
    targets = inputs["labels"][:, 1:]                                           # (b, s-1)
    keep = targets != IGNORE_INDEX                                              # (b, s-1)
    logits = reply_logits(model, inputs["input_ids"], inputs.get("attention_mask"), keep)
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    if kl_weight:
        with torch.no_grad(), model.disable_adapter():
            base = reply_logits(model, inputs["input_ids"], inputs.get("attention_mask"), keep)  # (n, V)
        loss = loss + kl_weight * F.kl_div(F.log_softmax(logits.float(), -1), F.log_softmax(base.float(), -1),
                                           log_target=True, reduction="sum")
    if num_items_in_batch is None:
        return loss / keep.sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch

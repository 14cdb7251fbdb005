"""trainer.loss: the reply-only loss equals the model's own loss, value and gradients, on GPT-2 and Llama (+LoRA)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from moviechat_tui.core.dialogue import IGNORE_INDEX
from trainer.loss import reply_loss, supports_reply_loss

VOCAB = 97


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))  # no dropout: equal passes
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        tie_word_embeddings=True))


def batch():
    """Right-padded rows with prompts of different lengths; labels -100 on prompt and padding."""
    generator = torch.Generator().manual_seed(1)
    lengths, prompts = [20, 13, 7], [12, 4, 5]
    width = max(lengths)
    input_ids = torch.zeros(len(lengths), width, dtype=torch.long)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    mask = torch.zeros_like(input_ids)
    for row, (n, p) in enumerate(zip(lengths, prompts)):
        ids = torch.randint(1, VOCAB, (n,), generator=generator)
        input_ids[row, :n], mask[row, :n] = ids, 1
        labels[row, p:n] = ids[p:]
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("num_items", [None, 40])
def test_reply_loss_matches_the_models_own_loss_and_gradients(kind, num_items):
    model, inputs = tiny(kind), batch()
    assert supports_reply_loss(model)
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    reference = model(**inputs, **kwargs).loss
    reference.backward()
    expected = grads(model)
    model.zero_grad()

    loss = reply_loss(model, inputs, None if num_items is None else torch.tensor(num_items))
    loss.backward()
    assert torch.allclose(loss, reference, atol=1e-6)
    got = grads(model)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-6), name


def test_reply_loss_runs_through_lora_layers():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama"), LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear",
                                                     lora_dropout=0.0))
    for name, param in model.named_parameters():  # non-zero B so that the adapter changes the output
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    inputs = batch()
    reference = model(**inputs).loss
    reference.backward()
    expected = grads(model)
    assert expected and all("lora_" in n for n in expected)
    model.zero_grad()
    loss = reply_loss(model, inputs)
    loss.backward()
    assert torch.allclose(loss, reference, atol=1e-6)
    with model.disable_adapter():  # the adapter really took part
        assert not torch.allclose(reply_loss(model, inputs), reference, atol=1e-4)
    for name, value in grads(model).items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


def test_a_batch_without_reply_tokens_gives_zero_not_nan():
    inputs = batch()
    inputs["labels"][:] = IGNORE_INDEX
    assert reply_loss(tiny("gpt2"), inputs).item() == 0.0


def test_moviechat_train_uses_it(tiny_gpt2_dir, tmp_path, monkeypatch):
    import trainer.movie_trainer as movie_trainer_module
    from tests.test_train import quiet, tiny_config
    from trainer.train import train

    calls = []
    monkeypatch.setattr(movie_trainer_module, "reply_loss", lambda *a, **k: calls.append(1) or reply_loss(*a, **k))
    train(tiny_config(tiny_gpt2_dir, tmp_path / "run", max_steps=2, eval_steps=2), log=quiet)
    assert len(calls) >= 2  # every training step (and the evaluations) went through the reply loss


def _lora(seed_b: float):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama"), LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear",
                                                     lora_dropout=0.0))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=seed_b) if seed_b else torch.nn.init.zeros_(param)
    return model


def test_the_kl_term_is_zero_while_the_adapter_changes_nothing():
    model, inputs = _lora(0.0), batch()  # B = 0: tuned == base
    assert torch.allclose(reply_loss(model, inputs, kl_weight=1.0), reply_loss(model, inputs), atol=1e-6)


def test_the_kl_term_measures_the_distance_to_the_base_and_pulls_towards_it():
    import torch.nn.functional as F

    model, inputs = _lora(0.5), batch()
    targets = inputs["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    tuned = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits[:, :-1][keep]
    with torch.no_grad(), model.disable_adapter():
        base = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits[:, :-1][keep]
    p_base = F.softmax(base, -1)
    expected_kl = (p_base * (F.log_softmax(base, -1) - F.log_softmax(tuned, -1))).sum() / keep.sum()
    plain = reply_loss(model, inputs)
    with_kl = reply_loss(model, inputs, kl_weight=0.3)
    assert expected_kl > 0
    assert torch.allclose(with_kl - plain, 0.3 * expected_kl, atol=1e-5)
    # Its gradient alone moves the adapter towards the base: one small step lowers the KL.
    model.zero_grad()
    (with_kl - plain).backward()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.grad is not None:
                param -= 0.05 * param.grad
    assert (reply_loss(model, inputs, kl_weight=0.3) - reply_loss(model, inputs)).item() < (with_kl - plain).item()

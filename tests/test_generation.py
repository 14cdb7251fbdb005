"""Model loading and streaming generation, on tiny models saved with save_pretrained."""

import threading
import time

import pytest
import torch

from moviechat_tui.core.dialogue import USER, Turn
from moviechat_tui.core.generation import stream_reply
from moviechat_tui.core.settings import GenerationSettings, SettingsError
from moviechat_tui.core.loading import ModelLoadError, load_model

GREEDY = GenerationSettings(temperature=0, repetition_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=20)


@pytest.fixture(scope="module")
def tiny(tiny_gpt2_dir):
    return load_model(str(tiny_gpt2_dir))


def _prompt(loaded, text="Where are you going?"):
    return loaded.format.prompt_ids([Turn(USER, text)])


def test_a_save_pretrained_dir_loads_like_a_hub_id(tiny, tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    ids = torch.tensor([_prompt(tiny)])
    with torch.no_grad():
        assert torch.allclose(tiny.model(ids).logits, reference(ids).logits, atol=1e-6)
    assert tiny.format.name == "plain"
    assert tiny.context_window == 256


def test_streaming_matches_plain_greedy_generate(tiny):
    prompt = _prompt(tiny)
    stream = stream_reply(tiny, prompt, GREEDY)
    pieces = list(stream)
    with torch.no_grad():
        out = tiny.model.generate(
            torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False, max_new_tokens=20, min_new_tokens=1,
            eos_token_id=tiny.format.end_of_turn_id, pad_token_id=tiny.tokenizer.pad_token_id,
        )
    expected = tiny.tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
    assert "".join(pieces).strip() == expected == stream.text
    assert stream.stats.new_tokens == out.shape[1] - len(prompt)
    assert stream.finish_reason in ("length", "end_of_turn")


def test_seeded_sampling_is_reproducible(tiny):
    settings = GenerationSettings(temperature=1.0, seed=7, max_new_tokens=15)
    first = stream_reply(tiny, _prompt(tiny), settings)
    second = stream_reply(tiny, _prompt(tiny), settings)
    assert "".join(first) == "".join(second)


def test_cancel_stops_mid_reply(tiny):
    # Per word (piece_seconds=0): at the paced rate a fast backend could finish before the third piece.
    stream = stream_reply(tiny, _prompt(tiny), GenerationSettings(max_new_tokens=200, temperature=1.0),
                          piece_seconds=0)
    got = []
    for piece in stream:
        got.append(piece)
        if len(got) == 3:
            stream.cancel()
    assert stream.finish_reason == "cancelled"
    assert stream.stats.new_tokens < 200
    assert stream.text == "".join(got).strip()


def test_stopping_early_releases_the_model(tiny):
    stream = stream_reply(tiny, _prompt(tiny), GenerationSettings(max_new_tokens=200))
    iterator = iter(stream)
    next(iterator)
    iterator.close()  # the consumer walks away
    assert stream.finish_reason == "cancelled"
    assert tiny.generate_lock.acquire(timeout=5)
    tiny.generate_lock.release()


class _EndOfTurnFavoured:
    """A forward hook: end-of-turn wins every step it is allowed, else the word " Out"."""

    def __init__(self, loaded):
        self.loaded = loaded

    def __enter__(self):
        eot = self.loaded.format.end_of_turn_id
        word = self.loaded.tokenizer.encode(" Out")[0]

        def hook(module, inputs, output):
            output[..., eot] += 1000.0
            output[..., word] += 500.0
            return output

        self.handle = self.loaded.model.lm_head.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_end_of_turn_is_never_the_first_token(tiny):
    with _EndOfTurnFavoured(tiny):
        stream = stream_reply(tiny, _prompt(tiny), GREEDY.replace(max_new_tokens=5))
        text = "".join(stream)
    assert text == "Out"
    assert stream.finish_reason == "end_of_turn"


@pytest.mark.parametrize("field,value", [("temperature", -1), ("top_p", 0), ("top_p", 1.5), ("max_new_tokens", 0),
                                         ("repetition_penalty", 0), ("top_k", -1)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(SettingsError):
        GenerationSettings(**{field: value}).validate()


def test_missing_directory_gives_one_clear_line(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tmp_path / "nope"))
    assert "no model directory" in str(info.value) and "\n" not in str(info.value)


def test_directory_without_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_model(str(tmp_path))


def test_corrupt_weights_give_one_clear_line(tiny_gpt2_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_gpt2_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not really safetensors")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(broken))
    assert str(broken) in str(info.value) and "\n" not in str(info.value)


def test_offline_hub_id_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model("no-such-org/no-such-model")
    assert "smollm2-135m" in str(info.value)


def test_chat_template_models_stop_at_their_end_of_turn(tiny_chatml_dir):
    loaded = load_model(str(tiny_chatml_dir))
    assert loaded.format.name == "chat-template"
    with _EndOfTurnFavoured(loaded):
        stream = stream_reply(loaded, _prompt(loaded), GREEDY)
        text = "".join(stream)
    assert stream.finish_reason == "end_of_turn" and text.strip()
    assert "<|im_end|>" not in text


def test_the_decoding_speed_leaves_out_the_wait_for_the_first_token():
    from moviechat_tui.core.generation import ReplyStats

    # Two tokens: 0.4 s of prefill, then one more token 0.01 s later.
    short = ReplyStats(new_tokens=2, seconds=0.41, first_token_seconds=0.4)
    assert short.tokens_per_second == pytest.approx(2 / 0.41)  # what the header used to show: ~4.9 tok/s
    assert short.decode_tokens_per_second == pytest.approx(100.0)
    assert ReplyStats(new_tokens=1, seconds=0.4, first_token_seconds=0.4).decode_tokens_per_second is None
    assert ReplyStats(new_tokens=5, seconds=0.5).decode_tokens_per_second is None  # no first-token time
    # The reader took its time after the last token: the model's speed is what is shown.
    slow_reader = ReplyStats(new_tokens=9, seconds=0.9, first_token_seconds=0.2, last_token_seconds=0.28)
    assert slow_reader.decode_tokens_per_second == pytest.approx(100.0)


def test_a_streamed_reply_times_its_first_and_last_token(tiny):
    stream = stream_reply(tiny, _prompt(tiny), GREEDY)
    for _ in stream:
        time.sleep(0.05)  # a slow reader: the model is done long before the reply is read
    stats = stream.stats
    assert stats.new_tokens >= 2
    assert 0 < stats.first_token_seconds <= stats.last_token_seconds < stats.seconds
    assert stats.seconds - stats.last_token_seconds >= 0.04


# --- the consumer's pace -------------------------------------------------------------------------


def test_a_paced_reply_comes_in_fewer_pieces_with_the_same_text(slow_loaded):
    # The slow model gives a token every ~50 ms: per word, one piece per word; paced at 0.3 s, the
    # first piece at once and then a few joined ones.
    settings = GenerationSettings(temperature=0, max_new_tokens=12)
    per_word = stream_reply(slow_loaded, _prompt(slow_loaded), settings, piece_seconds=0)
    word_pieces = list(per_word)
    paced = stream_reply(slow_loaded, _prompt(slow_loaded), settings, piece_seconds=0.3)
    started = time.perf_counter()
    paced_pieces, arrivals = [], []
    for piece in paced:
        paced_pieces.append(piece)
        arrivals.append(time.perf_counter() - started)
    assert paced.text == per_word.text and "".join(paced_pieces).strip() == paced.text
    assert len(word_pieces) >= 6 and 2 <= len(paced_pieces) <= len(word_pieces) // 2
    assert all(later - earlier >= 0.29 for earlier, later in zip(arrivals, arrivals[1:]))
    assert paced.finish_reason == per_word.finish_reason == "length"


def test_paced_pieces_end_with_the_reply_and_a_cancel_still_stops_it(slow_loaded):
    paced = stream_reply(slow_loaded, _prompt(slow_loaded), GenerationSettings(max_new_tokens=200),
                         piece_seconds=0.2)
    got = []
    for piece in paced:
        got.append(piece)
        if len(got) == 2:
            paced.cancel()
    assert paced.finish_reason == "cancelled" and paced.stats.new_tokens < 40
    assert paced.text == "".join(got).strip()

"""One wording for times and reply details, in the app, on the web page and in the CLI."""

import time

from moviechat_tui.core.captions import SECONDS, display_time, reply_facts, settings_line, settings_summary
from moviechat_tui.core.settings import GenerationSettings
from moviechat_tui.core.store import Message


def _bot(**changes):
    fields = dict(id=1, conversation_id=1, position=1, role="bot", text="Out.", status="complete",
                  created_at="2025-03-14T21:07:05.000Z", model="tiny", settings=GenerationSettings().to_dict(),
                  token_count=12, latency_ms=1500.0)
    fields.update(changes)
    return Message(**{k: v for k, v in fields.items() if k in Message.__dataclass_fields__})


def test_times_are_local_in_a_terminal_and_labelled_utc_on_the_web(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert display_time("2025-03-14T21:07:05.000Z") == "2025-03-15 06:07"
        assert display_time("2025-03-14T21:07:05.000Z", SECONDS, utc=True) == "2025-03-14 21:07:05 UTC"
        assert display_time(None) == "" and display_time("yesterday") == "yesterday"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_reply_facts_say_what_produced_a_reply():
    assert reply_facts(_bot()) == ["tiny", "12 tokens", "1.5 s"]
    assert reply_facts(_bot(model=None, token_count=None, latency_ms=None)) == ["model unknown"]
    assert reply_facts(_bot(role="user")) == []
    greedy = GenerationSettings(temperature=0).to_dict()
    assert reply_facts(_bot(settings=greedy), GenerationSettings().to_dict())[-1] == "greedy · rep 1.15 · max 64"
    assert reply_facts(_bot(token_count=64))[-1] == "cut at max new tokens"
    assert "cut at max new tokens" not in reply_facts(_bot(token_count=64, status="cancelled"))


def test_settings_read_short_or_in_full():
    assert settings_summary(GenerationSettings(), ["comedy"]) == "T 0.7 · p 0.9 · k 50 · rep 1.15 · max 64 · comedy"
    assert settings_line({}) == ("temperature 0.7 · top-p 0.9 · top-k 50 · repetition penalty 1.15 · "
                                 "no-repeat n-gram 3 · max new tokens 64 · seed random")

"""The Streamlit page, driven by streamlit.testing.v1.AppTest on a tiny model and a tmp database.

The test talks to the same database through its own Store, the way the TUI would.
"""

from __future__ import annotations

import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest

from moviechat_tui.core import engine as engine_module
from moviechat_tui.core.engine import ChatEngine
from moviechat_tui.core.settings import GenerationSettings
from moviechat_tui.core.store import Store
from web import resources
from web.markup import NBSP, WORD_JOINER, markdown_pieces, text_to_markdown

APP = str(Path(__file__).resolve().parent.parent / "web" / "app.py")
XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]


@pytest.fixture
def db_path(tmp_path, monkeypatch, tiny_gpt2_dir):
    path = tmp_path / "chat.db"
    monkeypatch.setenv("MOVIECHAT_MODEL", str(tiny_gpt2_dir))
    monkeypatch.setenv("MOVIECHAT_DB", str(path))
    return path


@pytest.fixture
def store(db_path):
    """The database as another program (the TUI) sees it."""
    with Store(db_path) as s:
        yield s


def open_page(max_new_tokens: int = 8) -> AppTest:
    """A new browser session; its first conversation gets short replies (the test model is random)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    if not at.error:
        at.number_input(key="setting:max_new_tokens:new").set_value(max_new_tokens).run()
    return at


def say(at: AppTest, text: str) -> AppTest:
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception
    return at


def chat_texts(at: AppTest) -> list[tuple[str, str]]:
    return [(m.name, m.text[0].value) for m in at.chat_message]


def sidebar_labels(at: AppTest) -> list[str]:
    return [b.label for b in at.sidebar.button if b.key and b.key.startswith("open:")]


def render(markdown: str) -> str:
    return MarkdownIt("gfm-like").render(markdown)


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], ""  # the text as shown: word joiners are invisible

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text += data.replace(WORD_JOINER, "")


def parse(html: str) -> _Html:
    parser = _Html()
    parser.feed(html)
    return parser


# --- text as Markdown ------------------------------------------------------------------------

TRICKY = [
    *XSS,
    "# not a heading\n    not code\n- not a list\n1. nor this\n> nor a quote\n---\n===",
    "**bold** _it_ ~~gone~~ `code` [link](http://example.com) ![img](x.png) <b>b</b> &amp; a|b|c $x^2$",
    ":red[colored] :material/home: \\escaped\\ {braces} tab\there",
    "\tindented by tab\n  two spaces\n\nafter a blank line",
    "bare links: http://example.com www.example.com me@example.com",
]


@pytest.mark.parametrize("text", TRICKY)
def test_text_renders_as_exactly_that_text(text):
    html = parse(render(text_to_markdown(text)))
    assert set(html.tags) <= {"p", "br"}  # no headings, lists, links, images, code, raw HTML
    assert " ".join(html.text.split()) == " ".join(text.split())
    assert html.tags.count("br") >= 1 if "\n" in text.strip() else "br" not in html.tags  # lines stay lines


@pytest.mark.parametrize("text", TRICKY)
def test_streamed_pieces_escape_like_the_whole_text(text):
    for size in (1, 2, 3, 7):
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        assert "".join(markdown_pieces(pieces)) == text_to_markdown(text)


# --- the page ----------------------------------------------------------------------------------


def test_send_streams_a_reply_that_is_stored(db_path, store):
    at = say(open_page(), "Where are you going?")
    [conversation] = store.list_conversations()
    user, bot = store.messages(conversation.id)
    assert (user.role, user.text) == ("user", "Where are you going?")
    assert bot.role == "bot" and bot.status == "complete" and bot.text.strip()
    assert chat_texts(at) == [("user", user.text), ("assistant", bot.text)]
    assert sidebar_labels(at) == [text_to_markdown("Where are you going?")]
    assert at.query_params["conversation"] == str(conversation.id)  # a reload reopens it


def test_empty_input_is_ignored(db_path, store):
    at = say(open_page(), "   \n ")
    assert store.list_conversations() == [] and not at.chat_message and not at.error


def test_a_very_long_message_gets_a_reply(db_path, store):
    text = "Tell me everything. " * 1500  # far beyond the context window
    at = say(open_page(), text)
    [conversation] = store.list_conversations()
    user, bot = store.messages(conversation.id)
    assert user.text == text.strip() and bot.status == "complete" and bot.text
    assert any("tokens" in i.value for i in at.info)  # the engine's notice that the message was cut
    assert not at.error


def test_a_1mb_paste_is_cut_by_the_input_box_and_answered(db_path, store):
    at = say(open_page(), "x" * 1_000_000)  # AppTest keeps to max_chars as the browser does
    [conversation] = store.list_conversations()
    user, bot = store.messages(conversation.id)
    assert user.text == "x" * engine_module.MAX_MESSAGE_CHARS and bot.status == "complete"
    assert [i.value for i in at.info if "tokens" in i.value] and not at.error and not at.warning


def test_a_conversation_from_the_tui_can_be_opened_and_continued(db_path, store):
    other = ChatEngine(store, "tui-model")
    old = other.new_conversation("From the terminal")
    store.add_message(old.id, "user", "Hello from the terminal.")
    store.add_message(old.id, "bot", "Hello yourself.", model="tui-model")
    at = open_page()
    assert chat_texts(at) == []  # a new session opens no conversation by itself
    at.button(key=f"open:{old.id}").click().run()
    assert chat_texts(at) == [("user", "Hello from the terminal."), ("assistant", "Hello yourself.")]
    say(at, "And now from the browser.")
    texts = [m.text for m in store.messages(old.id)]
    assert texts[:3] == ["Hello from the terminal.", "Hello yourself.", "And now from the browser."]
    assert len(texts) == 4 and len(store.list_conversations()) == 1
    # ... and what the page wrote is what the terminal reads back.
    assert chat_texts(at)[-1] == ("assistant", texts[-1])


def test_settings_and_genres_are_stored_with_the_conversation(db_path, store):
    at = say(open_page(), "Hi.")
    [conversation] = store.list_conversations()
    at.multiselect(key=f"genres:{conversation.id}").set_value(["comedy", "horror"]).run()
    at.slider(key=f"setting:temperature:{conversation.id}").set_value(0.0).run()
    at.number_input(key=f"setting:max_new_tokens:{conversation.id}").set_value(5).run()
    stored = store.get_conversation(conversation.id)
    assert stored.conditioning == {"genres": ["comedy", "horror"]}
    assert stored.settings["temperature"] == 0.0 and stored.settings["max_new_tokens"] == 5
    say(at, "Again.")
    last = store.messages(conversation.id)[-1]
    assert last.settings["temperature"] == 0.0 and 0 < last.token_count <= 5
    captions = [c.value for c in at.chat_message[-1].caption]
    assert (last.token_count == 5) == any("cut at max new tokens" in c for c in captions)


def test_settings_chosen_before_the_first_message_apply_to_the_new_conversation(db_path, store):
    at = open_page()
    at.multiselect(key="genres:new").set_value(["sci-fi"]).run()
    at.number_input(key="setting:seed:new").set_value(7).run()
    say(at, "Beam me up.")
    [conversation] = store.list_conversations()
    assert conversation.conditioning == {"genres": ["sci-fi"]} and conversation.settings["seed"] == 7


def test_replay_shows_each_turn_with_time_model_and_settings(db_path, store):
    at = say(open_page(), "First line.")
    say(at, "Second line.")
    [conversation] = store.list_conversations()
    messages = store.messages(conversation.id)
    at.radio(key="view").set_value("Replay").run()
    assert not at.chat_input  # replay is read-only
    assert [text for _, text in chat_texts(at)] == [m.text for m in messages]
    bot = at.chat_message[1]
    captions = " ".join(c.value for c in bot.caption)
    assert text_to_markdown(messages[1].created_at.replace("T", " ")[:19]) in captions
    assert text_to_markdown(messages[1].model) in captions
    assert text_to_markdown(f"temperature {messages[1].settings['temperature']:g}") in captions
    assert text_to_markdown(f"max new tokens {messages[1].settings['max_new_tokens']}") in captions
    at.slider[0].set_value(1).run()  # step back to the first turn
    assert chat_texts(at) == [("user", "First line.")]


def test_download_buttons_carry_the_markdown_and_json_transcripts(db_path, store, monkeypatch):
    downloads = {}
    real = DeltaGenerator.download_button

    def spy(self, label, data, file_name=None, mime=None, **kwargs):
        downloads[file_name] = (mime, data)
        return real(self, label, data, file_name, mime, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", spy)
    say(open_page(), XSS[0])
    [conversation] = store.list_conversations()
    messages = store.messages(conversation.id)
    mime, markdown = downloads[f"moviechat-{conversation.id}.md"]
    assert mime == "text/markdown" and markdown == ChatEngine(store).export(conversation.id, "md")
    mime, data = downloads[f"moviechat-{conversation.id}.json"]
    exported = json.loads(data)
    assert mime == "application/json"
    assert [m["text"] for m in exported["messages"]] == [m.text for m in messages]
    assert exported["messages"][1]["settings"] == messages[1].settings


def test_what_users_type_is_shown_as_text_never_markup(db_path, store):
    at = open_page()
    for text in XSS:  # each starts a conversation, so it is a title in the sidebar and the header too
        next(b for b in at.sidebar.button if b.label == "New conversation").click().run()
        say(at, text)
        assert chat_texts(at)[0] == ("user", text)  # st.text: shown character for character
        assert not [e for m in at.chat_message for e in m.markdown if not e.is_caption]
        heading = parse(render(at.subheader[0].value))
        assert heading.text.strip() == text and heading.tags == ["p"]
    everything = [*at.markdown, *at.caption, *at.subheader]
    assert everything and not any(getattr(e.proto, "allow_html", False) for e in everything)
    labels = [parse(render(label)) for label in sidebar_labels(at)]
    assert sorted(label.text.strip() for label in labels) == sorted(XSS)
    assert all(label.tags == ["p"] for label in labels)


def test_a_model_that_cannot_load_shows_an_error_and_history_stays_readable(db_path, store, tmp_path, monkeypatch):
    monkeypatch.setenv("MOVIECHAT_MODEL", str(tmp_path / "no-such-model"))
    conversation = ChatEngine(store).new_conversation("Saved earlier")
    store.add_message(conversation.id, "user", "Still here?")
    at = open_page()
    assert len(at.error) == 1 and "no model directory" in at.error[0].value
    assert at.chat_input[0].disabled
    at.button(key=f"open:{conversation.id}").click().run()
    assert chat_texts(at) == [("user", "Still here?")]
    at.radio(key="view").set_value("Replay").run()
    assert not at.exception and [m.name for m in at.chat_message] == ["user"]


def test_a_failed_reply_is_reported_and_the_page_goes_on(db_path, store, monkeypatch):
    real = engine_module.stream_reply

    def broken(*args):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(engine_module, "stream_reply", broken)
    at = say(open_page(), "Hello?")
    assert any("the GPU caught fire" in e.value for e in at.error)
    monkeypatch.setattr(engine_module, "stream_reply", real)
    say(at, "Hello again?")
    [conversation] = store.list_conversations()
    assert [m.text for m in store.messages(conversation.id) if m.role == "user"] == ["Hello?", "Hello again?"]
    assert store.messages(conversation.id)[-1].status == "complete" and not at.error


def test_a_locked_database_gives_a_clear_message(db_path, store, monkeypatch):
    monkeypatch.setattr(resources, "DB_BUSY_TIMEOUT", 0.2)
    at = say(open_page(), "Before the lock.")
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        say(at, "During the lock.")
        assert any("locked" in e.value for e in at.error)
        assert sidebar_labels(at) == [text_to_markdown("Before the lock.")]  # still browsable
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    say(at, "After the lock.")
    [conversation] = store.list_conversations()
    assert [m.text for m in store.messages(conversation.id) if m.role == "user"] == [
        "Before the lock.", "After the lock."]


def test_a_database_removed_while_serving_is_started_afresh(db_path):
    at = say(open_page(), "Remember me.")
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    at.run()
    assert any("was removed" in w.value for w in at.warning)
    assert sidebar_labels(at) == [] and not at.exception
    say(at, "A fresh start.")
    with Store(db_path) as fresh:
        assert [c.title for c in fresh.list_conversations()] == ["A fresh start."]


def test_rename_and_delete(db_path, store):
    at = say(open_page(), "Old title.")
    [conversation] = store.list_conversations()
    at.text_input(key=f"title:{conversation.id}").set_value("Casablanca <b>night</b>").run()
    next(b for b in at.sidebar.button if b.label == "Rename").click().run()
    assert store.get_conversation(conversation.id).title == "Casablanca <b>night</b>"
    assert sidebar_labels(at) == [text_to_markdown("Casablanca <b>night</b>")]
    next(b for b in at.sidebar.button if b.label == "Delete…").click().run()
    assert store.list_conversations()  # not without confirming
    next(b for b in at.sidebar.button if b.label == "Delete").click().run()
    assert store.list_conversations() == [] and chat_texts(at) == [] and sidebar_labels(at) == []


def test_a_conversation_deleted_elsewhere_is_let_go(db_path, store):
    at = say(open_page(), "Soon gone.")
    [conversation] = store.list_conversations()
    store.delete_conversation(conversation.id)
    at.run()
    assert not at.exception and chat_texts(at) == []
    assert any("no longer exists" in i.value for i in at.info)


def test_sessions_keep_their_own_conversation(db_path, store):
    alice, bob = open_page(), open_page()
    say(alice, "I am Alice.")
    say(bob, "I am Bob.")
    alice.run()
    assert chat_texts(alice)[0] == ("user", "I am Alice.")
    assert chat_texts(bob)[0] == ("user", "I am Bob.")
    assert sorted(sidebar_labels(alice)) == sorted(sidebar_labels(bob)) == [
        text_to_markdown("I am Alice."), text_to_markdown("I am Bob.")]


def test_pages_render_while_another_session_is_generating(db_path, store):
    """A reply in progress holds the model's generate lock; rendering must never wait for it."""
    at = say(open_page(), "Keep this.")
    [conversation] = store.list_conversations()
    model = resources.shared_model(str(resources.page_config([]).model_spec))
    assert model.generate_lock.acquire(timeout=30)
    try:
        other = AppTest.from_file(APP, default_timeout=20)
        other.run()
        other.button(key=f"open:{conversation.id}").click().run()
        other.radio(key="view").set_value("Replay").run()
        assert not other.exception and len(other.chat_message) == 2
    finally:
        model.generate_lock.release()


def test_model_and_engine_are_loaded_once_per_process(db_path, tiny_gpt2_dir, monkeypatch):
    spec = str(tiny_gpt2_dir) + "/."  # a spec no other test used, so nothing is cached yet
    monkeypatch.setenv("MOVIECHAT_MODEL", spec)
    loads = []
    real = resources.load_model
    monkeypatch.setattr(resources, "load_model", lambda s: loads.append(s) or real(s))
    pages = [open_page() for _ in range(3)]
    for at in pages:
        at.run()
    say(pages[0], "Once is enough.")
    assert loads == [spec]
    config = resources.page_config([])
    assert resources.shared_engine(config)[0] is resources.shared_engine(config)[0]


def test_page_config_prefers_arguments_over_environment(tmp_path):
    environ = {"MOVIECHAT_MODEL": "from-env", "MOVIECHAT_DB": str(tmp_path / "env.db")}
    config = resources.page_config(["--model", "from-args", "--db", str(tmp_path / "a.db")], environ)
    assert (config.model_spec, config.db_path) == ("from-args", tmp_path / "a.db")
    config = resources.page_config(["--unrelated", "x"], environ)
    assert (config.model_spec, config.db_path) == ("from-env", tmp_path / "env.db")

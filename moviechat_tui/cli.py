"""`moviechat-tui`: the TUI (no subcommand) and line-mode commands.

    moviechat-tui [--model SPEC] [--db PATH] [--conversation ID]     the Textual app
    moviechat-tui chat [--model SPEC] [decoding options]            line-mode chat on stdin
    moviechat-tui list [QUERY] | replay ID | export ID | import FILE | search TEXT | models | web
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .cli_characters import add_parser as add_characters_parser
from .cli_characters import add_persona_options, cmd_characters, persona_from_args
from .core.dialogue import Conditioning
from .core.paths import default_db_path

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class CliError(Exception):
    """Reported as `error: <message>` with exit status 2."""


# --- argument parsing ------------------------------------------------------------


def _shared(model: bool) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a value given before or after the subcommand both count.
    parent.add_argument("--db", type=Path, default=argparse.SUPPRESS,
                        help="conversation database (default: $MOVIECHAT_DB or the user data dir)")
    if model:
        parent.add_argument("--model", default=argparse.SUPPRESS,
                            help="model spec: default, smollm2-135m, a directory, or a hub id")
    return parent


def _decoding_options(parser: argparse.ArgumentParser) -> None:
    from .core.settings import DESCRIPTIONS

    group = parser.add_argument_group("decoding")
    for setting in DESCRIPTIONS:
        default = setting.blank if setting.default is None else f"{setting.default:g}"
        group.add_argument(setting.flag, type=setting.type, help=f"{setting.help} (default {default})")
    group.add_argument("--genres", help="steer the tone, comma separated: comedy,horror,romance,sci-fi")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moviechat-tui", parents=[_shared(model=True)],
        description="Chat with movie characters. No subcommand opens the terminal app.",
    )
    parser.add_argument("--conversation", type=int, help="open this saved conversation")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    chat = sub.add_parser("chat", parents=[_shared(model=True)], help="line-mode chat: one message per stdin line")
    chat.add_argument("--conversation", type=int, default=argparse.SUPPRESS, help="continue this conversation")
    add_persona_options(chat)
    _decoding_options(chat)

    add_characters_parser(sub, [])

    lst = sub.add_parser("list", parents=[_shared(model=False)], help="saved conversations, newest first")
    lst.add_argument("query", nargs="?", help="only conversations whose title or messages match")
    lst.add_argument("--limit", type=int, default=50)

    replay = sub.add_parser("replay", parents=[_shared(model=False)], help="replay a saved conversation")
    replay.add_argument("id", type=int)
    replay.add_argument("--print", action="store_true", dest="print_only",
                        help="print the transcript instead of opening the app's replay view")

    export = sub.add_parser("export", parents=[_shared(model=False)], help="export a conversation")
    export.add_argument("id", type=int)
    export.add_argument("--format", choices=["md", "json"], default="md")
    export.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")

    imp = sub.add_parser("import", parents=[_shared(model=False)],
                         help="add a conversation from a file `export --format json` wrote")
    imp.add_argument("file", type=Path, help="the JSON export ('-' reads stdin)")

    search = sub.add_parser("search", parents=[_shared(model=False)], help="full-text search over messages")
    search.add_argument("text")
    search.add_argument("--limit", type=int, default=20)

    models = sub.add_parser("models", parents=[_shared(model=False)], help="what model specs resolve to")
    models.add_argument("specs", nargs="*", help="more specs (directories or hub ids) to check")

    web = sub.add_parser("web", parents=[_shared(model=True)], help="serve the Streamlit page")
    web.add_argument("--port", type=int, default=8501)
    web.add_argument("--host", default="127.0.0.1")
    return parser


# --- commands ------------------------------------------------------------------


def _db_path(args) -> Path:
    return Path(getattr(args, "db", None) or default_db_path()).expanduser()


def _open_engine(args, settings=None):
    """The engine every command goes through (the model loads only when a reply needs it)."""
    from .core.engine import ChatEngine
    from .core.store import Store

    return ChatEngine(Store(_db_path(args)), getattr(args, "model", "default"), settings)


def _settings_from(args):
    from .core.settings import DESCRIPTIONS, GenerationSettings

    return GenerationSettings().replace(**{s.name: getattr(args, s.name) for s in DESCRIPTIONS}).validate()


def cmd_chat(args) -> int:
    from .core.engine import EngineError
    from .core.store import StoreError

    persona = persona_from_args(args)  # before the database: an unknown name creates nothing
    interactive = sys.stdin.isatty()
    # Bytes that are not UTF-8 reach the engine as lone surrogates, which it replaces (with a notice)
    # rather than stopping the chat with a UnicodeDecodeError.
    sys.stdin.reconfigure(errors="surrogateescape")
    engine = _open_engine(args, _settings_from(args))
    genres = [g for g in (args.genres or "").split(",") if g.strip()] or None
    conversation_id = getattr(args, "conversation", None)
    if conversation_id is not None:
        conversation = engine.get_conversation(conversation_id)  # an unknown id fails before the load
    # The model first: one that can't load (or ctrl-c while it loads) leaves no empty conversation behind.
    with err.status(f"loading model {escape(engine.model_spec)}…", spinner="dots") if interactive else _null():
        engine.load()
    if conversation_id is not None:
        if genres is not None or persona is not None or _any_decoding_option(args):
            settings = engine.settings if _any_decoding_option(args) else None
            conversation = engine.update_settings(conversation_id, settings, genres, persona)
    else:
        conversation = engine.new_conversation(genres=genres, persona=persona)
    persona = Conditioning.from_dict(conversation.conditioning)
    who, bot_name = persona.describe(), persona.character or "Bot"
    err.print(f"[dim]conversation #{conversation.id}{' · ' + escape(who) if who else ''} · model "
              f"{escape(engine.model_spec)} · db {escape(str(engine.store.path))}"
              + (" · Ctrl-C stops a reply, Ctrl-D quits" if interactive else "") + "[/]", soft_wrap=True)
    while True:
        try:
            line = out.input("[bold cyan]You:[/] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and not line:
            break
        if not line.strip():
            if interactive:
                err.print("[yellow]empty message: type something to say[/]")
            continue
        try:
            reply = engine.send(conversation.id, line)
        except EngineError as exc:
            err.print(f"[yellow]{escape(str(exc))}[/]", soft_wrap=True)
            continue
        if not interactive:  # echo what was saved, so the transcript reads as a chat
            out.print(f"[bold cyan]You:[/] {escape(reply.user_message.text)}")
        out.print(f"[bold magenta]{escape(bot_name)}:[/] ", end="")
        pieces = iter(reply)
        try:
            for piece in pieces:
                out.print(escape(piece), end="", soft_wrap=True)
        except KeyboardInterrupt:
            reply.cancel()
            for _ in pieces:  # let the stream wind down and the store record it
                pass
        except StoreError:
            raise
        except Exception as exc:  # the reply failed (e.g. the model stalled): saved as an error, chat goes on
            reply.error = reply.error or str(exc)
        out.print()
        for notice in reply.notices:
            err.print(f"[dim]note: {escape(notice)}[/]", soft_wrap=True)
        if reply.status == "error":
            err.print(f"[red]error:[/] {escape(reply.error or 'the reply failed')}", soft_wrap=True)
        elif reply.status != "complete":
            err.print(f"[dim]({reply.status})[/]")
    err.print(f"[dim]saved as conversation #{conversation.id}: moviechat-tui replay {conversation.id}[/]")
    return 0


def _any_decoding_option(args) -> bool:
    from .core.settings import DESCRIPTIONS

    return any(getattr(args, s.name) is not None for s in DESCRIPTIONS)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cmd_characters(args) -> int:
    return cmd_characters(args, out, err)


def cmd_list(args) -> int:
    from .core.captions import display_time

    conversations = _open_engine(args).list_conversations(query=args.query, limit=args.limit)
    if not conversations:
        err.print("no saved conversations" + (f" match {args.query!r}" if args.query else ""))
        return 0
    table = Table("id", "title", "messages", "updated", "model", box=None)
    for c in conversations:
        table.add_row(str(c.id), escape(c.title or "(untitled)"), str(c.message_count), display_time(c.updated_at),
                      escape(c.model_spec))
    out.print(table)
    return 0


def print_transcript(conversation, messages, console: Console = out) -> None:
    from .core.captions import SECONDS, display_time, reply_facts

    persona = Conditioning.from_dict(conversation.conditioning)
    console.print(f"[bold]#{conversation.id} {escape(conversation.title or '(untitled)')}[/]  "
                  f"[dim]{escape(' · '.join(p for p in (conversation.model_spec, persona.describe()) if p))}[/]",
                  soft_wrap=True)
    bot = f"[bold magenta]{escape(persona.character or 'Bot')}[/]"
    for m in messages:
        who = "[bold cyan]You[/]" if m.role == "user" else bot
        meta = [display_time(m.created_at, SECONDS), *reply_facts(m)] + ([m.status] if m.status != "complete" else [])
        console.print(f"{who} [dim]{escape(' · '.join(meta))}[/]")
        console.print(escape(m.text), soft_wrap=True)


def cmd_replay(args) -> int:
    conversation, messages = _open_engine(args).transcript(args.id)
    if not args.print_only and sys.stdout.isatty() and sys.stdin.isatty():
        return _run_app(args, replay=args.id)
    print_transcript(conversation, messages)
    return 0


def cmd_export(args) -> int:
    text = _open_engine(args).export(args.id, args.format)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {args.output}")
    else:
        sys.stdout.write(text + "\n")
    return 0


def cmd_import(args) -> int:
    from .core.engine import EngineError

    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{args.file} is not a moviechat JSON export (not UTF-8 text)") from None
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    try:
        conversation = _open_engine(args).import_json(text)
    except EngineError as exc:
        raise CliError(f"{args.file}: {exc}; nothing was imported") from None
    out.print(f"imported {escape(str(args.file))} as conversation #{conversation.id}"
              f" ({conversation.message_count} messages): moviechat-tui replay {conversation.id}")
    return 0


def cmd_search(args) -> int:
    hits = _open_engine(args).search(args.text, limit=args.limit)  # EngineError for an empty search
    if not hits:
        err.print(f"nothing matches {args.text!r}")
        return 0
    table = Table("conversation", "title", "#", "who", "text", box=None)
    for conversation, message in hits:
        text = " ".join(message.text.split())
        table.add_row(str(conversation.id), escape(conversation.title or ""), str(message.position), message.role,
                      escape(text[:80] + ("…" if len(text) > 80 else "")))
    out.print(table)
    return 0


def cmd_models(args) -> int:
    from .core.backends import BACKEND_ENV, ct2_cache, describe_backends, llamacpp_cache
    from .core.specs import describe_specs

    table = Table("spec", "resolves to", "offline", "note", box=None)
    for info in describe_specs(args.specs):
        table.add_row(escape(info.spec), escape(info.resolves_to), "yes" if info.available else "no",
                      escape(info.note))
    out.print(table)
    chosen = os.environ.get(BACKEND_ENV) or "auto"
    out.print(f"\n[bold]Replies come from[/] ({BACKEND_ENV}={escape(chosen)}; the first that can run a model):")
    backends = Table("backend", "installed", "why", box=None)
    for name, available, note in describe_backends():
        backends.add_row(name, "yes" if available else "no", escape(note))
    out.print(backends)
    copies = llamacpp_cache.converted() + ct2_cache.converted()
    if copies:
        out.print("\n[bold]Converted copies[/] (made on first use; reply perplexity vs the model in memory,"
                  " on everyday replies and on replies that use the history):")
        table = Table("model", "copy", "everyday", "history", "note", box=None)
        for copy in copies:
            change, history = (("" if copy.get(key) is None else f"{copy[key]:+.2f}%")
                               for key in ("change_pct", "context_change_pct"))
            table.add_row(escape(copy["folder"]), copy["backend"], change, history, escape(copy["note"]))
        out.print(table)
    return 0


def cmd_web(args) -> int:
    app = Path(__file__).resolve().parent.parent / "web" / "app.py"
    if not app.is_file():
        raise CliError(f"the web page is missing ({app}); reinstall moviechat")
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(args.port), "--server.address", args.host,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",  # a server, not a dev loop
        "--", "--model", getattr(args, "model", "default"), "--db", str(_db_path(args)),
    ]
    err.print(f"moviechat web page on http://{args.host}:{args.port} (Ctrl-C stops it)")
    sys.stdout.flush()
    sys.stderr.flush()
    # Become the server: a signal to this process (Ctrl-C, SIGTERM) then reaches Streamlit itself.
    os.execv(sys.executable, command)


def _run_app(args, replay: int | None = None) -> int:
    try:
        from .tui.app import run_app
    except ImportError:
        err.print("[yellow]the terminal app is not available yet; starting line-mode chat[/]")
        return cmd_chat(build_parser().parse_args(["chat", *_passthrough(args)]))
    return run_app(
        model_spec=getattr(args, "model", "default"), db_path=_db_path(args),
        conversation_id=getattr(args, "conversation", None), replay_id=replay,
    )


def _passthrough(args) -> list[str]:
    extra = []
    for name in ("model", "db", "conversation"):
        value = getattr(args, name, None)
        if value is not None:
            extra += [f"--{name}", str(value)]
    return extra


COMMANDS = {"chat": cmd_chat, "characters": _cmd_characters, "list": cmd_list, "replay": cmd_replay,
            "export": cmd_export, "import": cmd_import, "search": cmd_search, "models": cmd_models, "web": cmd_web}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from .core.cast import CastError
    from .core.engine import EngineError
    from .core.settings import SettingsError
    from .core.loading import ModelLoadError
    from .core.store import StoreError

    try:
        if args.command is None:
            return _run_app(args)
        return COMMANDS[args.command](args)
    except (CliError, CastError, EngineError, SettingsError, ModelLoadError, StoreError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)  # one line, however long
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

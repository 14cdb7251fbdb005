"""Decoding speed while the reply is being saved and shown: the engine alone and the app, with the
reply's text handed on per word (as before) or paced (generation.PIECE_SECONDS).

    python bench/streaming.py --save bench/results/streaming.json     # ~6 min here

Each arm chats the same 8 messages in a conversation of its own, with the same seed, so every arm
gets the same replies (checked). The app is the real Textual app on the real engine, run headless
(`App.run_test`): it lays out and renders each update, but writes no bytes to a terminal. Between
messages each arm waits as a user would (`--think`), so the next reply starts from the history read
ahead. Arms run in the order A B C D, then D C B A, against drift.

Per reply, from ReplyStats: the wait for the first token, and the decoding speed (the tokens after
the first over the model's own time for them); and what the user waits for: from the send (the
engine's `send`, the app's Enter) to the first piece of the reply handed to the reader (the engine)
or to its view on screen (the app). The per-word baseline is the same code with
`ChatEngine(piece_seconds=0)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MESSAGES = [
    "Hi, I'm Rosa and I'm a dentist in Chicago.",
    "Tell me about your day.",
    "What do you think of the city at night?",
    "Do you have any family?",
    "What's my job?",
    "Tell me a long story about your childhood.",
    "Where do I work?",
    "Say something nice.",
]


def engine_for(db: Path, loaded, piece_seconds: float):
    from moviechat_tui.core.engine import ChatEngine
    from moviechat_tui.core.store import Store

    return ChatEngine(Store(db), "bench", loader=lambda _: loaded, piece_seconds=piece_seconds)


def figures(stats, text: str, sent_at: float, first_piece_at: float | None) -> dict:
    shown = None if first_piece_at is None else round((first_piece_at - sent_at) * 1000, 1)  # None: no text
    return {"tokens": stats.new_tokens, "first_token_ms": round(stats.first_token_seconds * 1000, 1),
            "first_piece_ms": shown,
            "decode_tokens_per_second": stats.decode_tokens_per_second, "text": text}


def engine_arm(loaded, settings, piece_seconds: float, think: float, db: Path, messages: list[str]) -> list[dict]:
    engine = engine_for(db, loaded, piece_seconds)
    engine.load()
    replies, conversation_id = [], None
    for message in messages:
        sent_at, first_piece_at = time.perf_counter(), None
        reply = engine.send(conversation_id, message, settings)
        for _ in reply:
            first_piece_at = first_piece_at or time.perf_counter()
        conversation_id = reply.conversation_id
        replies.append(figures(reply.stats, reply.message.text, sent_at, first_piece_at))
        time.sleep(think)
    engine.store.close()
    return replies


async def app_arm(loaded, settings, piece_seconds: float, think: float, db: Path, messages: list[str]) -> list[dict]:
    from moviechat_tui.tui.app import MovieChatApp
    from moviechat_tui.tui.widgets import MessageView

    engine = engine_for(db, loaded, piece_seconds)
    sent, send = [], engine.send
    engine.send = lambda *args, **kwargs: sent.append(send(*args, **kwargs)) or sent[-1]  # the app's replies
    shown, append = [], MessageView.append  # when the reply's first piece reached its view

    def timed_append(view, piece: str) -> None:
        if not view.text:
            shown.append(time.perf_counter())
        append(view, piece)

    app = MovieChatApp(engine)
    replies = []
    MessageView.append = timed_append
    try:
        async with app.run_test(size=(120, 35)) as pilot:
            chat = app.chat_screen.chat
            while engine.model_status != "ready":
                await asyncio.sleep(0.05)
            chat.settings = settings
            for i, message in enumerate(messages):
                chat.chat_input.text = message
                shown.clear()
                sent_at = time.perf_counter()
                await pilot.press("enter")
                while len(sent) <= i or chat.generating:
                    await asyncio.sleep(0.01)
                replies.append(figures(sent[i].stats, sent[i].message.text, sent_at, shown[0] if shown else None))
                await asyncio.sleep(think)
    finally:
        MessageView.append = append
    engine.store.close()
    return replies


def summary(replies: list[dict]) -> dict:
    timed = [r for r in replies if r["decode_tokens_per_second"]]
    speeds = [r["decode_tokens_per_second"] for r in timed]
    seconds = sum((r["tokens"] - 1) / r["decode_tokens_per_second"] for r in timed)
    return {"decode_tokens_per_second_median": statistics.median(speeds),
            # all replies' tokens after the first over the model's time for them: long replies weigh more
            "decode_tokens_per_second_pooled": sum(r["tokens"] - 1 for r in timed) / seconds,
            "first_token_ms_median": statistics.median(r["first_token_ms"] for r in replies),
            "first_piece_ms_median": statistics.median(r["first_piece_ms"] for r in replies
                                                       if r["first_piece_ms"] is not None),
            "tokens": sum(r["tokens"] for r in replies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--think", type=float, default=2.0, help="seconds between a reply and the next message")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--arms", help="a subset of the arms, separated by ';' (default: all four)")
    parser.add_argument("--rounds", type=int, default=1, help="times each arm runs in each direction")
    parser.add_argument("--messages", type=int, default=len(MESSAGES), help="the first N of the 8 messages")
    parser.add_argument("--save", type=Path)
    args = parser.parse_args(argv)

    from moviechat_tui.core.generation import PIECE_SECONDS
    from moviechat_tui.core.loading import load_model
    from moviechat_tui.core.settings import GenerationSettings

    loaded = load_model(args.model)
    settings = replace(GenerationSettings(), seed=args.seed).validate()  # the app's defaults, seeded
    messages = MESSAGES[: args.messages]
    arms = {
        "engine, per word": lambda db: engine_arm(loaded, settings, 0.0, args.think, db, messages),
        "engine, paced": lambda db: engine_arm(loaded, settings, PIECE_SECONDS, args.think, db, messages),
        "app, per word": lambda db: asyncio.run(app_arm(loaded, settings, 0.0, args.think, db, messages)),
        "app, paced": lambda db: asyncio.run(app_arm(loaded, settings, PIECE_SECONDS, args.think, db, messages)),
    }
    if args.arms:
        arms = {name: arms[name] for name in [a.strip() for a in args.arms.split(";")]}
    runs: dict[str, list[list[dict]]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate([*arms, *reversed(arms)] * args.rounds):
            runs[name].append(arms[name](Path(tmp) / f"{i}.db"))
            print(f"{name}: {summary(runs[name][-1])}", flush=True)

    texts = {name: [[r["text"] for r in run] for run in arm_runs] for name, arm_runs in runs.items()}
    same_replies = len({json.dumps(t) for arm in texts.values() for t in arm}) == 1
    result = {"model": loaded.name, "backend": loaded.backend.name, "piece_seconds": PIECE_SECONDS,
              "think_seconds": args.think, "same_replies_in_every_arm": same_replies,
              "arms": {name: {**summary([r for run in arm_runs for r in run]), "runs": arm_runs}
                       for name, arm_runs in runs.items()}}
    base = next(iter(result["arms"].values()))["decode_tokens_per_second_median"]
    print(f"\nmodel {loaded.name} on {loaded.backend.name}; same replies in every arm: {same_replies}")
    pooled_base = next(iter(result["arms"].values()))["decode_tokens_per_second_pooled"]
    print(f"{'arm':<18} {'decode tok/s (median)':>22} {'ratio':>6} {'pooled':>7} {'ratio':>6} {'first token ms':>15}"
          f" {'sent to shown ms':>17}")
    for name, arm in result["arms"].items():
        speed, pooled = arm["decode_tokens_per_second_median"], arm["decode_tokens_per_second_pooled"]
        arm["decode_ratio_vs_first_arm"] = speed / base
        arm["decode_pooled_ratio_vs_first_arm"] = pooled / pooled_base
        print(f"{name:<18} {speed:>22.1f} {speed / base:>5.2f}x {pooled:>7.1f} {pooled / pooled_base:>5.2f}x"
              f" {arm['first_token_ms_median']:>15.0f} {arm['first_piece_ms_median']:>17.0f}")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""ConvoKit's `movie-corpus`, read into the corpus's records.

`utterances.jsonl` (one utterance per line, with `reply_to`), `conversations.json`
(movie metadata per conversation), `speakers.json` (character metadata); UTF-8.
Utterances are ordered by following `reply_to` from the root, or by their numeric
id when that chain is broken.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict

from trainer.clean import CleanConfig, clean_text
from trainer.corpus_files import CorpusError, CorpusFiles, parse_gender, parse_year, quoted_list
from trainer.corpus_records import Character, Conversation, Movie, Parsed, Utterance

CONVOKIT_FILES = ("utterances.jsonl", "conversations.json", "speakers.json")


def _decode_utf8(raw: bytes, repaired: Counter) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        repaired["undecodable_bytes"] += 1
        return raw.decode("utf-8", errors="replace")  # U+FFFD, which cleaning handles


def _json_file(source: CorpusFiles, name: str, repaired: Counter) -> dict:
    if not source.find(name):
        return {}
    with source.open(name) as f:
        text = _decode_utf8(f.read(), repaired)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{name} in {source.path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CorpusError(f"{name} in {source.path} is not a JSON object of id -> record")
    return data


def _line_number(utterance_id: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", utterance_id)
    return (int(digits) if digits else sys.maxsize, utterance_id)


def _meta(record) -> dict:
    meta = record.get("meta") if isinstance(record, dict) else None
    return meta if isinstance(meta, dict) else {}


def read_convokit(source: CorpusFiles, clean: CleanConfig) -> Parsed:
    """Every usable speaker, movie, utterance and conversation of the corpus's three files."""
    skipped, repaired = Counter(), Counter()
    intern = sys.intern

    characters: dict[str, Character] = {}
    speakers_file = "speakers.json" if source.find("speakers.json") else "users.json"  # older ConvoKit name
    for speaker_id, record in _json_file(source, speakers_file, repaired).items():
        meta = _meta(record)
        characters[speaker_id] = Character(
            intern(speaker_id), str(meta.get("character_name") or ""), parse_gender(meta.get("gender")), intern(str(meta.get("movie_idx") or ""))
        )

    movies: dict[str, Movie] = {}
    conversation_movie: dict[str, str] = {}
    for conv_id, record in _json_file(source, "conversations.json", repaired).items():
        meta = _meta(record)
        movie_id = str(meta.get("movie_idx") or "")
        if not movie_id:
            continue
        conversation_movie[conv_id] = intern(movie_id)
        if movie_id not in movies:
            genres = meta.get("genre")
            genre_list = genres if isinstance(genres, list) else (quoted_list(str(genres or "[]")) or [])
            movies[movie_id] = Movie(
                intern(movie_id), str(meta.get("movie_name") or ""), parse_year(str(meta.get("release_year") or "")),
                tuple(str(g).strip().lower() for g in genre_list if str(g).strip()),
            )

    # conversation id -> [(utterance, reply_to)], in file order
    grouped: dict[str, list[tuple[Utterance, str | None]]] = defaultdict(list)
    utterance_movie: dict[str, str] = {}
    seen: set[str] = set()
    with source.open("utterances.jsonl") as f:
        for raw in f:
            line = _decode_utf8(raw, repaired)
            if not line.strip():
                skipped["blank_line"] += 1
                continue
            try:
                record = json.loads(line)
                utt_id, conv_id, text = record["id"], record["conversation_id"], record.get("text")
            except (json.JSONDecodeError, KeyError, TypeError):
                skipped["malformed_utterance_line"] += 1
                continue
            if not isinstance(utt_id, str) or not isinstance(conv_id, str) or not isinstance(text, (str, type(None))):
                skipped["malformed_utterance_line"] += 1
                continue
            if utt_id in seen:
                skipped["duplicate_utterance_id"] += 1
                continue
            seen.add(utt_id)
            reply_to = record.get("reply_to", record.get("reply-to"))
            speaker = intern(str(record.get("speaker") or record.get("user") or ""))  # "user": older ConvoKit
            grouped[conv_id].append((Utterance(utt_id, speaker, clean_text(text or "", clean)), reply_to))
            movie_id = _meta(record).get("movie_id")
            if movie_id and conv_id not in utterance_movie:
                utterance_movie[conv_id] = intern(str(movie_id))

    conversations: list[Conversation] = []
    listed = [c for c in conversation_movie if c in grouped]  # conversations.json's order first
    for conv_id in listed + [c for c in grouped if c not in conversation_movie]:
        members = grouped[conv_id]
        if len(members) < 2:
            skipped["short_conversation"] += 1
            continue
        ordered = _reply_chain(members)
        if ordered is None:
            repaired["reply_chain_broken"] += 1
            ordered = [u for u, _ in sorted(members, key=lambda m: _line_number(m[0].id))]
        movie_id = conversation_movie.get(conv_id) or utterance_movie.get(conv_id) or ""
        if not movie_id:
            skipped["conversation_without_movie"] += 1
            continue
        conversations.append(Conversation(conv_id, movie_id, ordered))

    if not conversations and not seen:
        raise CorpusError(f"no usable utterances in {source.path}: utterances.jsonl has no line in the expected format")
    return Parsed("convokit", movies, characters, conversations, {}, skipped, repaired)


def _reply_chain(members: list[tuple[Utterance, str | None]]) -> list[Utterance] | None:
    """The utterances from the root along reply_to links, or None unless that is one unbroken chain."""
    by_id = {u.id: u for u, _ in members}
    roots = [u for u, parent in members if parent is None or parent not in by_id]
    children: dict[str, list[Utterance]] = defaultdict(list)
    for u, parent in members:
        if parent in by_id:
            children[parent].append(u)
    if len(roots) != 1:
        return None
    chain = [roots[0]]
    while len(chain) <= len(members):
        nxt = children.get(chain[-1].id, [])
        if len(nxt) != 1:
            break
        chain.append(nxt[0])
    return chain if len(chain) == len(members) and not children.get(chain[-1].id) else None

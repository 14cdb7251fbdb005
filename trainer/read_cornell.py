"""The original Cornell release (`cornell_movie_dialogs_corpus.zip`), read into the corpus's records.

Four files, fields separated by ` +++$+++ `, text in ISO-8859-1 (see `trainer.corpus_files`).
A conversation lists its line ids in spoken order; the lines file itself is in descending id
order, so order always comes from that list. A missing line cuts its conversation in two.
"""

from __future__ import annotations

import sys
from collections import Counter

from trainer.clean import CleanConfig, clean_text
from trainer.corpus_files import CorpusError, CorpusFiles, original_records, parse_gender, parse_year, quoted_list
from trainer.corpus_records import Character, Conversation, Movie, Parsed, Utterance

ORIGINAL_FILES = ("movie_lines.txt", "movie_conversations.txt", "movie_titles_metadata.txt", "movie_characters_metadata.txt")


def read_cornell(source: CorpusFiles, clean: CleanConfig) -> Parsed:
    """Every usable movie, character, line and conversation of the release's four files."""
    skipped, repaired = Counter(), Counter()
    intern = sys.intern

    movies: dict[str, Movie] = {}
    for movie_id, title, year, _rating, _votes, genres in original_records(source, "movie_titles_metadata.txt", 6, "movie", skipped):
        genre_list = quoted_list(genres)
        if genre_list is None:
            skipped["malformed_movie_line"] += 1
            continue
        movies[movie_id] = Movie(intern(movie_id), title, parse_year(year), tuple(g.strip().lower() for g in genre_list if g.strip()))

    characters: dict[str, Character] = {}
    for char_id, name, movie_id, _title, gender, _credit in original_records(source, "movie_characters_metadata.txt", 6, "character", skipped):
        characters[char_id] = Character(intern(char_id), name, parse_gender(gender), intern(movie_id))

    lines: dict[str, Utterance] = {}
    speaker_names: dict[str, tuple[str, str]] = {}
    for line_id, char_id, movie_id, name, text in original_records(source, "movie_lines.txt", 5, "utterance", skipped):
        if line_id in lines:
            skipped["duplicate_utterance_id"] += 1
            continue
        lines[line_id] = Utterance(line_id, intern(char_id), clean_text(text, clean))
        speaker_names.setdefault(char_id, (name, movie_id))

    conversations: list[Conversation] = []
    used: set[str] = set()
    for _c1, _c2, movie_id, id_list in original_records(source, "movie_conversations.txt", 4, "conversation", skipped):
        ids = quoted_list(id_list)
        if not ids:
            skipped["malformed_conversation_line"] += 1
            continue
        # A missing line cuts the conversation: joining across the gap would
        # pair a reply with a line it never answered.
        pieces: list[list[Utterance]] = [[]]
        for line_id in ids:
            if line_id in lines:
                pieces[-1].append(lines[line_id])
            else:
                skipped["missing_utterance"] += 1
                if pieces[-1]:
                    pieces.append([])
        for piece in pieces:
            if len(piece) < 2:
                if piece:
                    skipped["short_conversation"] += 1
                continue
            conv_id = ids[0] if piece[0].id == ids[0] else f"{ids[0]}@{piece[0].id}"
            conversations.append(Conversation(conv_id, intern(movie_id), piece))
            used.update(u.id for u in piece)
    if unused := len(lines.keys() - used):
        skipped["utterance_not_in_conversation"] += unused

    if not lines and not conversations:
        raise CorpusError(f"no usable lines in {source.path}: movie_lines.txt has no line in the expected format")
    return Parsed("cornell", movies, characters, conversations, speaker_names, skipped, repaired)

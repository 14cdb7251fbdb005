"""A conversation as a tree: the Store's reads of branches and alternatives, and the branch on screen.

Each message has a parent (the message before it; None for a first message). Siblings are the
versions of one turn: regenerated replies, edited messages. Which sibling is shown is remembered at
every fork (`conversations.shown_root_id`, `messages.shown_child_id`; see schema.py), so the branch on
screen is read by following those pointers from the first message.

BranchQueries is a mixin of Store: it reads through the Store's `_read()` and writes through its
`_write()` (the pointers are set on the write connection, inside the caller's transaction if any).
"""

from __future__ import annotations

from .records import MESSAGE_COLUMNS, Message, message_from

# Ids of the branch on screen, first message first. A pointer to a message that is not a child
# (another program's stray write) ends the branch instead of wandering off it.
_SHOWN_BRANCH = """
    with recursive branch(id) as (
        select r.id from conversations c join messages r
            on r.id = c.shown_root_id and r.conversation_id = c.id and r.parent_id is null
            where c.id = :conversation
        union all
        select k.id from branch b join messages m on m.id = b.id
            join messages k on k.id = m.shown_child_id and k.parent_id = m.id
    )"""

# Ids of a message and those before it, first message first (what the model sees when answering it).
_PATH = """
    with recursive path(id, parent_id) as (
        select id, parent_id from messages where id = :message
        union all
        select m.id, m.parent_id from path p join messages m on m.id = p.parent_id
    )"""


class BranchQueries:
    def messages(self, conversation_id: int) -> list[Message]:
        """The branch on screen, first message first: what the front ends show, replay and exports
        use, and what the next message follows."""
        with self._read() as db:
            self.get_conversation(conversation_id)  # UnknownConversation rather than []
            rows = db.query(f"{_SHOWN_BRANCH} select {MESSAGE_COLUMNS} from branch b"
                                 " join messages m on m.id = b.id order by m.position",
                                 {"conversation": conversation_id})
            return [message_from(row) for row in rows]

    def tree(self, conversation_id: int) -> list[Message]:
        """Every message of the conversation, alternatives included, by position then age."""
        with self._read() as db:
            self.get_conversation(conversation_id)
            rows = db.query(f"select {MESSAGE_COLUMNS} from messages m where m.conversation_id = ?"
                                 " order by m.position, m.id", [conversation_id])
            return [message_from(row) for row in rows]

    def branch_to(self, message_id: int) -> list[Message]:
        """The message and every message before it on its branch, first message first."""
        with self._read() as db:
            self.get_message(message_id)  # UnknownMessage rather than []
            rows = db.query(f"{_PATH} select {MESSAGE_COLUMNS} from path p join messages m on m.id = p.id"
                                 " order by m.position", {"message": message_id})
            return [message_from(row) for row in rows]

    def siblings(self, message_id: int) -> list[Message]:
        """The versions of the message's turn (itself included), oldest first."""
        with self._read() as db:
            message = self.get_message(message_id)
            rows = db.query(f"select {MESSAGE_COLUMNS} from messages m where m.conversation_id = ?"
                                 " and m.position = ? and m.parent_id is ? order by m.id",
                                 [message.conversation_id, message.position, message.parent_id])
            return [message_from(row) for row in rows]

    def shown_leaf_id(self, conversation_id: int) -> int | None:
        """The last message of the branch on screen (None: nothing is shown yet)."""
        with self._read() as db:
            rows = list(db.query(f"{_SHOWN_BRANCH} select b.id from branch b join messages m on m.id = b.id"
                                 " order by m.position desc limit 1", {"conversation": conversation_id}))
        return rows[0]["id"] if rows else None

    def show(self, message_id: int) -> None:
        """Put a message on the branch on screen in place of its siblings; after it comes what was
        shown after it last time."""
        message = self.get_message(message_id)  # UnknownMessage if there is none
        self._write(lambda: self._point_at(message.conversation_id, message.parent_id, message.id))

    def end_branch_at(self, message_id: int) -> None:
        """Show nothing after this message (e.g. while its reply is being written again)."""
        self.get_message(message_id)
        self._write(lambda: self._conn.execute("update messages set shown_child_id = null where id = ?",
                                               [message_id]))

    def _point_at(self, conversation_id: int, parent_id: int | None, child_id: int) -> None:
        if parent_id is None:
            self._conn.execute("update conversations set shown_root_id = ? where id = ?", [child_id, conversation_id])
        else:
            self._conn.execute("update messages set shown_child_id = ? where id = ?", [child_id, parent_id])

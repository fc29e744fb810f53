-- Full-text search over finished messages (SQLite FTS5), ranked by bm25 with snippets.
-- `owner` holds 'u' || the conversation's user id as one token, so a search intersects the
-- owner's posting list with the terms' instead of scanning everyone's matches. The index
-- keeps its own copy of the text: an answer is indexed once, when it stops streaming,
-- not at every partial save.
CREATE VIRTUAL TABLE message_search USING fts5 (owner, body, tokenize = 'unicode61 remove_diacritics 2');

INSERT INTO message_search (rowid, owner, body)
SELECT m.id, 'u' || c.user_id, m.content
FROM messages m JOIN conversations c ON c.id = m.conversation_id
WHERE m.status <> 'streaming';

CREATE TRIGGER message_search_insert AFTER INSERT ON messages WHEN new.status <> 'streaming'
BEGIN
    INSERT INTO message_search (rowid, owner, body)
    SELECT new.id, 'u' || c.user_id, new.content FROM conversations c WHERE c.id = new.conversation_id;
END;

CREATE TRIGGER message_search_finish AFTER UPDATE OF status ON messages
WHEN old.status = 'streaming' AND new.status <> 'streaming'
BEGIN
    INSERT INTO message_search (rowid, owner, body)
    SELECT new.id, 'u' || c.user_id, new.content FROM conversations c WHERE c.id = new.conversation_id;
END;

CREATE TRIGGER message_search_edit AFTER UPDATE OF content ON messages
WHEN old.status <> 'streaming' AND new.status <> 'streaming'
BEGIN
    DELETE FROM message_search WHERE rowid = old.id;
    INSERT INTO message_search (rowid, owner, body)
    SELECT new.id, 'u' || c.user_id, new.content FROM conversations c WHERE c.id = new.conversation_id;
END;

CREATE TRIGGER message_search_delete AFTER DELETE ON messages
BEGIN
    DELETE FROM message_search WHERE rowid = old.id;
END;

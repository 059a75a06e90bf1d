-- Every answer sqlora gives, with what the user made of it.
CREATE TABLE feedback (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    os_user            TEXT    NOT NULL,
    question           TEXT    NOT NULL,
    db_identity        TEXT    NOT NULL,
    dialect            TEXT    NOT NULL,
    schema_fingerprint TEXT    NOT NULL,
    schema_context     TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    adapter            TEXT,
    generated_sql      TEXT,
    attempts           TEXT    NOT NULL DEFAULT '[]',
    final_sql          TEXT,
    error              TEXT,
    verdict            TEXT    NOT NULL DEFAULT 'unreviewed'
                       CHECK (verdict IN ('unreviewed', 'accepted', 'corrected', 'rejected')),
    correction         TEXT,
    note               TEXT,
    trained_in         TEXT
);
CREATE INDEX feedback_by_db ON feedback (db_identity, verdict);

-- Each verdict change, so that \undo can put the previous one back.
CREATE TABLE feedback_event (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    feedback_id    INTEGER NOT NULL REFERENCES feedback (id),
    at             TEXT    NOT NULL,
    old_verdict    TEXT    NOT NULL,
    old_correction TEXT,
    old_note       TEXT,
    new_verdict    TEXT    NOT NULL
);

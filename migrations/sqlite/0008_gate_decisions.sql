-- The audit trail of deployment gates, as in PostgreSQL's 0014; the report is
-- JSON text.
CREATE TABLE gate_decisions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    site          TEXT,
    since         TEXT,
    decided_at    TEXT NOT NULL,
    passed        INTEGER NOT NULL,
    report        TEXT NOT NULL,
    key_id        TEXT NOT NULL
);
CREATE INDEX gate_decisions_version ON gate_decisions (model, model_version, id);

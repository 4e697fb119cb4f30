-- Agreement of several readers, as in PostgreSQL's 0018; `ai_vs_reader` is
-- JSON text.
CREATE TABLE reader_agreement (
    case_id           INTEGER NOT NULL REFERENCES cases (id),
    model             TEXT NOT NULL,
    model_version     TEXT NOT NULL,
    structure         TEXT NOT NULL,
    site              TEXT NOT NULL,
    prediction_id     INTEGER NOT NULL REFERENCES segmentations (id),
    job_id            INTEGER NOT NULL,
    ai_vs_reader      TEXT NOT NULL,
    inter_reader_dice REAL NOT NULL,
    ai_vs_consensus   REAL NOT NULL,
    ambiguous         INTEGER NOT NULL,
    computed_at       TEXT NOT NULL,
    PRIMARY KEY (case_id, model, model_version, structure)
);
CREATE INDEX reader_agreement_version ON reader_agreement (model, model_version, site);

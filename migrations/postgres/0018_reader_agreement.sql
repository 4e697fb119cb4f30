-- Agreement of several readers (docs/compare.md, "Several readers"): for each
-- case, model version and structure, the readers' agreement with each other
-- and the AI's with each reader (`ai_vs_reader`, a JSON array of
-- {"reader", "dice"}, the primary reader first) and with their consensus.
-- One row per case, version and structure, replaced whenever the version's
-- latest prediction is scored again or another reader's reference arrives.
-- Keyed on the case and the prediction, not on results (whose key may change).
CREATE TABLE reader_agreement (
    case_id           bigint NOT NULL REFERENCES cases (id),
    model             text NOT NULL,
    model_version     text NOT NULL,
    structure         text NOT NULL,
    site              text NOT NULL,
    prediction_id     bigint NOT NULL REFERENCES segmentations (id),
    job_id            bigint NOT NULL,
    ai_vs_reader      jsonb NOT NULL,
    inter_reader_dice float8 NOT NULL,
    ai_vs_consensus   float8 NOT NULL,
    ambiguous         boolean NOT NULL,
    computed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, model, model_version, structure)
);
CREATE INDEX reader_agreement_version ON reader_agreement (model, model_version, site);

-- The audit trail of deployment gates (docs/compare.md): one row per decision,
-- with what was asked (the version, the site and time window of its results),
-- the answer and its report, and the id of the API key that asked (never a
-- secret, never a person's name).
CREATE TABLE gate_decisions (
    id            bigserial PRIMARY KEY,
    model         text NOT NULL,
    model_version text NOT NULL,
    site          text,
    since         timestamptz,
    decided_at    timestamptz NOT NULL DEFAULT now(),
    passed        boolean NOT NULL,
    report        jsonb NOT NULL,
    key_id        text NOT NULL
);
CREATE INDEX gate_decisions_version ON gate_decisions (model, model_version, id);

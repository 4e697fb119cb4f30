-- Frozen baselines (versioned, audited), detector state per stream, every
-- detector update for audit and replay, and alerts.

CREATE TABLE baselines (
    id            bigserial PRIMARY KEY,
    model         text NOT NULL,
    model_version text NOT NULL,
    version       integer NOT NULL,
    source        text NOT NULL,
    description   text,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    active        boolean NOT NULL DEFAULT true,
    UNIQUE (model, model_version, version)
);
CREATE UNIQUE INDEX baselines_active ON baselines (model, model_version) WHERE active;

-- One sample per structure; structure 'all' holds per-case mean Dice.
CREATE TABLE baseline_samples (
    baseline_id bigint NOT NULL REFERENCES baselines (id),
    structure   text NOT NULL,
    dice        double precision[] NOT NULL,
    PRIMARY KEY (baseline_id, structure)
);

-- site 'all' is the pooled stream; structure 'all' the site's mean Dice.
CREATE TABLE detector_state (
    site          text NOT NULL,
    model         text NOT NULL,
    model_version text NOT NULL,
    structure     text NOT NULL,
    detector      text NOT NULL CHECK (detector IN ('pit_ewma', 'cusum', 'guard_rail')),
    baseline_id   bigint NOT NULL REFERENCES baselines (id),
    t             integer NOT NULL DEFAULT 0,
    statistic     double precision NOT NULL,
    limit_value   double precision NOT NULL,
    alarm         boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    reset_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, model, model_version, structure, detector)
);

CREATE TABLE detector_updates (
    id            bigserial PRIMARY KEY,
    site          text NOT NULL,
    model         text NOT NULL,
    model_version text NOT NULL,
    structure     text NOT NULL,
    detector      text NOT NULL,
    result_id     bigint NOT NULL REFERENCES results (id),
    baseline_id   bigint NOT NULL REFERENCES baselines (id),
    t             integer NOT NULL,
    input         double precision NOT NULL,
    statistic     double precision NOT NULL,
    limit_value   double precision NOT NULL,
    alarm         boolean NOT NULL,
    parameters    jsonb NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX detector_updates_stream ON detector_updates (site, model, model_version, structure, detector, id);

CREATE TABLE alerts (
    id              bigserial PRIMARY KEY,
    site            text NOT NULL,
    model           text NOT NULL,
    model_version   text NOT NULL,
    structure       text NOT NULL,
    detector        text NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    observed_at     timestamptz NOT NULL,
    statistic       double precision NOT NULL,
    limit_value     double precision NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    note            text,
    resolved_at     timestamptz
);
CREATE UNIQUE INDEX alerts_open ON alerts (site, model, model_version, structure, detector) WHERE resolved_at IS NULL;

-- Acquisition metadata lookups for stratification.
CREATE INDEX results_acquisition ON results USING gin (acquisition);

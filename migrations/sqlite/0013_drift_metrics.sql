-- As migrations/postgres/0021: baseline samples, streams, detector states,
-- parameter sets and incidents keyed by the metric watched ('dice' for every
-- existing row). SQLite cannot change a key in place: the keyed tables are
-- rebuilt, keeping their rows (and the parameter sets' ids, which the
-- detector history refers to).
CREATE TABLE baseline_samples_new (
    baseline_id INTEGER NOT NULL REFERENCES baselines (id),
    structure   TEXT NOT NULL,
    metric      TEXT NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece')),
    dice        TEXT NOT NULL,
    PRIMARY KEY (baseline_id, metric, structure)
);
INSERT INTO baseline_samples_new (baseline_id, structure, dice)
SELECT baseline_id, structure, dice FROM baseline_samples;
DROP TABLE baseline_samples;
ALTER TABLE baseline_samples_new RENAME TO baseline_samples;

CREATE TABLE drift_streams_new (
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    site          TEXT NOT NULL,
    structure     TEXT NOT NULL,
    metric        TEXT NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece')),
    baseline_id   INTEGER NOT NULL REFERENCES baselines (id),
    state         TEXT NOT NULL,
    pairs         INTEGER NOT NULL,
    latest_at     TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (model, model_version, site, structure, metric)
);
INSERT INTO drift_streams_new (model, model_version, site, structure, baseline_id, state, pairs, latest_at, updated_at)
SELECT model, model_version, site, structure, baseline_id, state, pairs, latest_at, updated_at FROM drift_streams;
DROP TABLE drift_streams;
ALTER TABLE drift_streams_new RENAME TO drift_streams;
CREATE INDEX drift_streams_latest ON drift_streams (latest_at);

CREATE TABLE detector_state_new (
    site          TEXT NOT NULL,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    structure     TEXT NOT NULL,
    metric        TEXT NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece')),
    detector      TEXT NOT NULL CHECK (detector IN ('pit_ewma', 'cusum', 'guard_rail')),
    baseline_id   INTEGER NOT NULL REFERENCES baselines (id),
    t             INTEGER NOT NULL DEFAULT 0,
    statistic     REAL NOT NULL,
    limit_value   REAL NOT NULL,
    alarm         INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (site, model, model_version, structure, metric, detector)
);
INSERT INTO detector_state_new (site, model, model_version, structure, detector, baseline_id, t, statistic,
                                limit_value, alarm, updated_at)
SELECT site, model, model_version, structure, detector, baseline_id, t, statistic, limit_value, alarm, updated_at
FROM detector_state;
DROP TABLE detector_state;
ALTER TABLE detector_state_new RENAME TO detector_state;

CREATE TABLE detector_parameters_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    site          TEXT NOT NULL,
    structure     TEXT NOT NULL,
    metric        TEXT NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece')),
    baseline_id   INTEGER NOT NULL REFERENCES baselines (id),
    parameters    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (model, model_version, site, structure, metric, baseline_id, parameters)
);
INSERT INTO detector_parameters_new (id, model, model_version, site, structure, baseline_id, parameters, created_at)
SELECT id, model, model_version, site, structure, baseline_id, parameters, created_at FROM detector_parameters;
DROP TABLE detector_parameters;
ALTER TABLE detector_parameters_new RENAME TO detector_parameters;

ALTER TABLE incidents
    ADD COLUMN metric TEXT NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece'));

-- Drift in case-time order, limits from a false-alert budget, and incidents
-- instead of one alert per detector and stream.

-- Results wait here until the drift task feeds them, in case-time order, once
-- they are older than the configured lateness. Results stored before this
-- migration were fed when they were scored.
ALTER TABLE results ADD COLUMN drift_pending boolean NOT NULL DEFAULT true;
UPDATE results SET drift_pending = false;
CREATE INDEX results_drift_pending ON results (observed_at, id) WHERE drift_pending;

-- What each stream remembers between cases (window of case time, detector
-- statistics), and its share of the false-alert budget.
CREATE TABLE drift_streams (
    model         text NOT NULL,
    model_version text NOT NULL,
    site          text NOT NULL,
    structure     text NOT NULL,
    baseline_id   bigint NOT NULL REFERENCES baselines (id),
    state         jsonb NOT NULL,
    pairs         integer NOT NULL,
    latest_at     timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, model_version, site, structure)
);
CREATE INDEX drift_streams_latest ON drift_streams (latest_at);

-- Every update records what it was computed with: the limits and the target.
ALTER TABLE detector_updates ADD COLUMN late boolean NOT NULL DEFAULT false;
ALTER TABLE detector_updates ADD COLUMN observed_at timestamptz;

-- One incident per change: the stream and detector that opened it, and every
-- correlated stream that alarmed while it was open.
CREATE TABLE incidents (
    id              bigserial PRIMARY KEY,
    site            text NOT NULL,
    model           text NOT NULL,
    model_version   text NOT NULL,
    structure       text NOT NULL,
    detector        text NOT NULL CHECK (detector IN ('pit_ewma', 'cusum', 'guard_rail')),
    opened_at       timestamptz NOT NULL DEFAULT now(),
    -- case times: the opening alarm, the latest alarm of any stream, the case
    -- that closed it
    observed_at     timestamptz NOT NULL,
    last_alarm_at   timestamptz NOT NULL,
    closed_observed_at timestamptz,
    statistic       double precision NOT NULL,
    limit_value     double precision NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    note            text,
    resolved_at     timestamptz,
    resolution      text CHECK (resolution IN ('back_in_control', 'new_baseline'))
);
CREATE INDEX incidents_open ON incidents (model, model_version) WHERE resolved_at IS NULL;
CREATE INDEX incidents_site ON incidents (site, id);

CREATE TABLE incident_streams (
    incident_id    bigint NOT NULL REFERENCES incidents (id),
    site           text NOT NULL,
    structure      text NOT NULL,
    detector       text NOT NULL,
    first_alarm_at timestamptz NOT NULL,
    last_alarm_at  timestamptz NOT NULL,
    PRIMARY KEY (incident_id, site, structure, detector)
);

-- Alerts of the per-detector model become incidents of one stream each.
INSERT INTO incidents (id, site, model, model_version, structure, detector, opened_at, observed_at,
                       last_alarm_at, statistic, limit_value, acknowledged_at, acknowledged_by, note,
                       resolved_at, resolution)
SELECT id, site, model, model_version, structure, detector, opened_at, observed_at, observed_at,
       statistic, limit_value, acknowledged_at, acknowledged_by, note, resolved_at,
       CASE WHEN resolved_at IS NULL THEN NULL ELSE 'back_in_control' END
FROM alerts;
INSERT INTO incident_streams (incident_id, site, structure, detector, first_alarm_at, last_alarm_at)
SELECT id, site, structure, detector, observed_at, observed_at FROM alerts;
SELECT setval(pg_get_serial_sequence('incidents', 'id'), coalesce((SELECT max(id) FROM incidents), 0) + 1, false);
DROP TABLE alerts;

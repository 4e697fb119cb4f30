-- The embedded store: the same tables as migrations/postgres (0001 to 0007
-- together), in SQLite's types. Times are UTC text of one fixed width
-- (YYYY-MM-DDTHH:MM:SS.ffffffZ, written by segwatch, never by SQL defaults), so
-- they compare in time order as text; JSON and arrays are JSON text; booleans
-- are 0 or 1. Case keys are the integration's pseudonymous identifiers; no
-- patient data is stored.

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('ingest', 'read', 'admin')),
    site          TEXT,
    label         TEXT,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT,
    CHECK (role <> 'ingest' OR site IS NOT NULL)
);

CREATE TABLE model_schemas (
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    schema        TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (model, model_version)
);

CREATE TABLE cases (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    site       TEXT NOT NULL,
    case_key   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (site, case_key)
);

CREATE TABLE segmentations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id          INTEGER NOT NULL REFERENCES cases (id),
    role             TEXT NOT NULL CHECK (role IN ('prediction', 'reference')),
    revision         INTEGER NOT NULL,
    sha256           BLOB NOT NULL,
    format           TEXT NOT NULL CHECK (format IN ('nifti', 'dicom_seg')),
    -- gzip-compressed upload; NULL once purged after the retention period
    content          BLOB,
    content_bytes    INTEGER NOT NULL,
    voxels           INTEGER NOT NULL,
    grid             TEXT NOT NULL,
    model            TEXT,
    model_version    TEXT,
    acquisition      TEXT NOT NULL DEFAULT '{}',
    provenance       TEXT,
    observed_at      TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    purged_at        TEXT,
    sop_instance_uid TEXT,
    -- JSON array of the structure keys the upload holds
    structures       TEXT NOT NULL DEFAULT '[]',
    UNIQUE (case_id, role, revision),
    UNIQUE (case_id, role, sha256),
    CHECK (role <> 'prediction' OR (model IS NOT NULL AND model_version IS NOT NULL))
);
CREATE UNIQUE INDEX segmentations_sop_instance ON segmentations (case_id, role, sop_instance_uid)
    WHERE sop_instance_uid IS NOT NULL;
CREATE INDEX segmentations_model_activity ON segmentations (model, model_version, received_at)
    WHERE role = 'prediction';
CREATE INDEX segmentations_received ON segmentations (received_at);

CREATE TABLE version_structures (
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    structure     TEXT NOT NULL,
    PRIMARY KEY (model, model_version, structure)
);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id       INTEGER NOT NULL REFERENCES cases (id),
    prediction_id INTEGER NOT NULL REFERENCES segmentations (id),
    reference_id  INTEGER NOT NULL REFERENCES segmentations (id),
    status        TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    run_after     TEXT NOT NULL,
    lease_token   INTEGER,
    lease_until   TEXT,
    last_error    TEXT,
    created_at    TEXT NOT NULL,
    finished_at   TEXT,
    UNIQUE (prediction_id, reference_id)
);
CREATE INDEX jobs_claimable ON jobs (run_after, id) WHERE status = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_case ON jobs (case_id, id);
CREATE INDEX jobs_reference ON jobs (reference_id);

CREATE TABLE results (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        INTEGER NOT NULL UNIQUE REFERENCES jobs (id),
    case_id       INTEGER NOT NULL REFERENCES cases (id),
    site          TEXT NOT NULL,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    surface       TEXT NOT NULL,
    grid          TEXT NOT NULL,
    mean_dice     REAL,
    acquisition   TEXT NOT NULL DEFAULT '{}',
    observed_at   TEXT NOT NULL,
    scored_at     TEXT NOT NULL,
    -- waits for the drift task, which feeds results in case-time order
    drift_pending INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX results_case ON results (case_id, id);
CREATE INDEX results_stream ON results (model, model_version, site, observed_at);
CREATE INDEX results_observed ON results (observed_at);
CREATE INDEX results_drift_pending ON results (observed_at, id) WHERE drift_pending;

CREATE TABLE structure_results (
    result_id      INTEGER NOT NULL REFERENCES results (id),
    position       INTEGER NOT NULL,
    structure      TEXT NOT NULL,
    label          INTEGER,
    code           TEXT,
    name           TEXT,
    empty          TEXT NOT NULL,
    pred_voxels    INTEGER NOT NULL,
    ref_voxels     INTEGER NOT NULL,
    tp             INTEGER NOT NULL,
    fp             INTEGER NOT NULL,
    fn             INTEGER NOT NULL,
    pred_volume_ml REAL NOT NULL,
    ref_volume_ml  REAL NOT NULL,
    -- NULL where the value is infinite or undefined; `empty` says why
    dice           REAL,
    iou            REAL,
    precision      REAL,
    recall         REAL,
    hd_mm          REAL,
    hd95_mm        REAL,
    assd_mm        REAL,
    masd_mm        REAL,
    nsd            REAL,
    tolerance_mm   REAL NOT NULL,
    PRIMARY KEY (result_id, structure)
);
CREATE INDEX structure_results_dice ON structure_results (structure, dice);

-- The latest result of each case, per structure, as in PostgreSQL.
CREATE VIEW case_structure_results AS
SELECT c.site, c.case_key, r.model, r.model_version, s.structure,
       s.dice, s.hd95_mm, s.nsd, r.scored_at, 'scored' AS status
FROM results r
JOIN cases c ON c.id = r.case_id
JOIN structure_results s ON s.result_id = r.id
WHERE r.id = (SELECT max(r2.id) FROM results r2 WHERE r2.case_id = r.case_id);

CREATE TABLE baselines (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    version       INTEGER NOT NULL,
    source        TEXT NOT NULL,
    description   TEXT,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1,
    UNIQUE (model, model_version, version)
);
CREATE UNIQUE INDEX baselines_active ON baselines (model, model_version) WHERE active;

-- One sample per structure (a JSON array of Dice); structure 'all' holds
-- per-case mean Dice.
CREATE TABLE baseline_samples (
    baseline_id INTEGER NOT NULL REFERENCES baselines (id),
    structure   TEXT NOT NULL,
    dice        TEXT NOT NULL,
    PRIMARY KEY (baseline_id, structure)
);

CREATE TABLE drift_streams (
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    site          TEXT NOT NULL,
    structure     TEXT NOT NULL,
    baseline_id   INTEGER NOT NULL REFERENCES baselines (id),
    state         TEXT NOT NULL,
    pairs         INTEGER NOT NULL,
    latest_at     TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (model, model_version, site, structure)
);
CREATE INDEX drift_streams_latest ON drift_streams (latest_at);

CREATE TABLE detector_state (
    site          TEXT NOT NULL,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    structure     TEXT NOT NULL,
    detector      TEXT NOT NULL CHECK (detector IN ('pit_ewma', 'cusum', 'guard_rail')),
    baseline_id   INTEGER NOT NULL REFERENCES baselines (id),
    t             INTEGER NOT NULL DEFAULT 0,
    statistic     REAL NOT NULL,
    limit_value   REAL NOT NULL,
    alarm         INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (site, model, model_version, structure, detector)
);

CREATE TABLE detector_updates (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    site          TEXT NOT NULL,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    structure     TEXT NOT NULL,
    detector      TEXT NOT NULL,
    result_id     INTEGER NOT NULL REFERENCES results (id),
    baseline_id   INTEGER NOT NULL REFERENCES baselines (id),
    t             INTEGER NOT NULL,
    input         REAL NOT NULL,
    statistic     REAL NOT NULL,
    limit_value   REAL NOT NULL,
    alarm         INTEGER NOT NULL,
    parameters    TEXT NOT NULL,
    late          INTEGER NOT NULL DEFAULT 0,
    observed_at   TEXT,
    at            TEXT NOT NULL
);
CREATE INDEX detector_updates_stream ON detector_updates (site, model, model_version, structure, detector, id);

CREATE TABLE incidents (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    site               TEXT NOT NULL,
    model              TEXT NOT NULL,
    model_version      TEXT NOT NULL,
    structure          TEXT NOT NULL,
    detector           TEXT NOT NULL CHECK (detector IN ('pit_ewma', 'cusum', 'guard_rail')),
    opened_at          TEXT NOT NULL,
    observed_at        TEXT NOT NULL,
    last_alarm_at      TEXT NOT NULL,
    closed_observed_at TEXT,
    statistic          REAL NOT NULL,
    limit_value        REAL NOT NULL,
    acknowledged_at    TEXT,
    acknowledged_by    TEXT,
    note               TEXT,
    resolved_at        TEXT,
    resolution         TEXT CHECK (resolution IN ('back_in_control', 'new_baseline'))
);
CREATE INDEX incidents_open ON incidents (model, model_version) WHERE resolved_at IS NULL;
CREATE INDEX incidents_site ON incidents (site, id);

CREATE TABLE incident_streams (
    incident_id    INTEGER NOT NULL REFERENCES incidents (id),
    site           TEXT NOT NULL,
    structure      TEXT NOT NULL,
    detector       TEXT NOT NULL,
    first_alarm_at TEXT NOT NULL,
    last_alarm_at  TEXT NOT NULL,
    PRIMARY KEY (incident_id, site, structure, detector)
);

CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    receiver    TEXT NOT NULL,
    status      TEXT NOT NULL,
    alertname   TEXT,
    labels      TEXT NOT NULL,
    annotations TEXT NOT NULL,
    starts_at   TEXT,
    ends_at     TEXT
);
CREATE INDEX notifications_received ON notifications (received_at);

-- Keys, structure schemas, cases with their uploaded segmentations, the job
-- queue, and results. Case keys are the integration's pseudonymous identifiers;
-- no patient data is stored.

CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    secret_sha256 bytea NOT NULL,
    role          text NOT NULL CHECK (role IN ('ingest', 'read', 'admin')),
    site          text,
    label         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK (role <> 'ingest' OR site IS NOT NULL)
);

CREATE TABLE model_schemas (
    model         text NOT NULL,
    model_version text NOT NULL,
    schema        jsonb NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, model_version)
);

CREATE TABLE cases (
    id         bigserial PRIMARY KEY,
    site       text NOT NULL,
    case_key   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site, case_key)
);

CREATE TABLE segmentations (
    id            bigserial PRIMARY KEY,
    case_id       bigint NOT NULL REFERENCES cases (id),
    role          text NOT NULL CHECK (role IN ('prediction', 'reference')),
    revision      integer NOT NULL,
    sha256        bytea NOT NULL,
    format        text NOT NULL CHECK (format IN ('nifti', 'dicom_seg')),
    -- gzip-compressed upload; NULL once purged after the retention period
    content       bytea,
    content_bytes bigint NOT NULL,
    voxels        bigint NOT NULL,
    grid          jsonb NOT NULL,
    model         text,
    model_version text,
    acquisition   jsonb NOT NULL DEFAULT '{}',
    provenance    jsonb,
    observed_at   timestamptz NOT NULL DEFAULT now(),
    received_at   timestamptz NOT NULL DEFAULT now(),
    purged_at     timestamptz,
    UNIQUE (case_id, role, revision),
    UNIQUE (case_id, role, sha256),
    CHECK (role <> 'prediction' OR (model IS NOT NULL AND model_version IS NOT NULL))
);

CREATE TABLE jobs (
    id            bigserial PRIMARY KEY,
    case_id       bigint NOT NULL REFERENCES cases (id),
    prediction_id bigint NOT NULL REFERENCES segmentations (id),
    reference_id  bigint NOT NULL REFERENCES segmentations (id),
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    run_after     timestamptz NOT NULL DEFAULT now(),
    lease_token   bigint,
    lease_until   timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (prediction_id, reference_id)
);
CREATE INDEX jobs_claimable ON jobs (run_after, id) WHERE status = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_case ON jobs (case_id, id);

CREATE TABLE results (
    id            bigserial PRIMARY KEY,
    job_id        bigint NOT NULL UNIQUE REFERENCES jobs (id),
    case_id       bigint NOT NULL REFERENCES cases (id),
    site          text NOT NULL,
    model         text NOT NULL,
    model_version text NOT NULL,
    surface       text NOT NULL,
    grid          jsonb NOT NULL,
    mean_dice     double precision,
    acquisition   jsonb NOT NULL DEFAULT '{}',
    observed_at   timestamptz NOT NULL,
    scored_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX results_case ON results (case_id, id);
CREATE INDEX results_stream ON results (model, model_version, site, observed_at);

CREATE TABLE structure_results (
    result_id     bigint NOT NULL REFERENCES results (id),
    position      integer NOT NULL,
    structure     text NOT NULL,
    label         integer,
    code          text,
    name          text,
    empty         text NOT NULL,
    pred_voxels   bigint NOT NULL,
    ref_voxels    bigint NOT NULL,
    tp            bigint NOT NULL,
    fp            bigint NOT NULL,
    fn            bigint NOT NULL,
    pred_volume_ml double precision NOT NULL,
    ref_volume_ml  double precision NOT NULL,
    -- NULL where the value is infinite or undefined; `empty` says why
    dice          double precision,
    iou           double precision,
    precision     double precision,
    recall        double precision,
    hd_mm         double precision,
    hd95_mm       double precision,
    assd_mm       double precision,
    masd_mm       double precision,
    nsd           double precision,
    tolerance_mm  double precision NOT NULL,
    PRIMARY KEY (result_id, structure)
);
CREATE INDEX structure_results_dice ON structure_results (structure, dice);

-- The latest result of each case, per structure: the drill-down table of the
-- dashboards reads this (case keys only, never patient data).
CREATE VIEW case_structure_results AS
SELECT c.site, c.case_key, r.model, r.model_version, s.structure,
       s.dice, s.hd95_mm, s.nsd, r.scored_at, 'scored'::text AS status
FROM results r
JOIN cases c ON c.id = r.case_id
JOIN structure_results s ON s.result_id = r.id
WHERE r.id = (SELECT max(r2.id) FROM results r2 WHERE r2.case_id = r.case_id);

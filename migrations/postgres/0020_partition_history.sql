-- Results and the rows that hang off them partitioned by month of the
-- result's scored_at (UTC), so that the results retention drops a month of
-- idle cases as whole partitions (Store::maintain_partitions) and time filters
-- skip other months. scored_at is copied into structure_results,
-- lesion_results and detector_history, so one result's rows all live in the
-- same month; each child's foreign key is (result_id, scored_at) and follows
-- an update of the result's scored_at (ON UPDATE CASCADE moves them together).
-- Partitions are named <table>_YYYY_MM; this migration creates one for every
-- month from the oldest result's (or last month) to two months ahead, so that
-- existing history too is dropped by whole months, and a DEFAULT partition per
-- table takes rows of any month without one (the results a month drop keeps,
-- and any scored while no service ran to create their month).
--
-- PostgreSQL needs the partition key in every unique index: results.job_id is
-- no longer UNIQUE (a plain index replaces it); one result per job rests on
-- the job's lease, which complete_job takes by moving the job from running to
-- done in the same transaction that stores the result.
DROP VIEW case_structure_results;

ALTER TABLE results RENAME TO results_unpartitioned;
ALTER TABLE structure_results RENAME TO structure_results_unpartitioned;
ALTER TABLE lesion_results RENAME TO lesion_results_unpartitioned;
ALTER TABLE detector_history RENAME TO detector_history_unpartitioned;
ALTER SEQUENCE results_id_seq OWNED BY NONE;
-- free the index/constraint names
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid IN ('results_unpartitioned'::regclass, 'structure_results_unpartitioned'::regclass,
                                  'lesion_results_unpartitioned'::regclass, 'detector_history_unpartitioned'::regclass)
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname, r.relname || '_old');
    END LOOP;
END $$;

CREATE TABLE results (
    id            bigint NOT NULL DEFAULT nextval('results_id_seq'),
    job_id        bigint NOT NULL REFERENCES jobs (id),
    case_id       bigint NOT NULL REFERENCES cases (id),
    site          text NOT NULL,
    model         text NOT NULL,
    model_version text NOT NULL,
    surface       text NOT NULL,
    grid          jsonb NOT NULL,
    mean_dice     double precision,
    acquisition   jsonb NOT NULL DEFAULT '{}',
    observed_at   timestamptz NOT NULL,
    scored_at     timestamptz NOT NULL DEFAULT now(),
    drift_pending boolean NOT NULL DEFAULT true,
    latest        boolean NOT NULL DEFAULT true,
    PRIMARY KEY (id, scored_at)
) PARTITION BY RANGE (scored_at);
ALTER SEQUENCE results_id_seq OWNED BY results.id;
-- job_id can no longer be UNIQUE across partitions (the key would have to be
-- in it); a plain index keeps the lookup fast.
CREATE INDEX results_job ON results (job_id);
CREATE INDEX results_acquisition ON results USING gin (acquisition);
CREATE INDEX results_case ON results (case_id, id);
CREATE INDEX results_drift_pending ON results (observed_at, id) WHERE drift_pending;
CREATE INDEX results_latest_site ON results (site, mean_dice, scored_at DESC) WHERE latest;
CREATE INDEX results_latest_stream ON results (model, model_version, site, scored_at) INCLUDE (id, case_id) WHERE latest;
CREATE INDEX results_observed ON results (observed_at);
CREATE INDEX results_stream ON results (model, model_version, site, observed_at);
CREATE INDEX results_scored ON results (scored_at);

CREATE TABLE structure_results (
    LIKE structure_results_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    scored_at timestamptz NOT NULL,
    PRIMARY KEY (result_id, structure, scored_at),
    FOREIGN KEY (result_id, scored_at) REFERENCES results (id, scored_at) ON UPDATE CASCADE
) PARTITION BY RANGE (scored_at);
CREATE INDEX structure_results_site ON structure_results (site, dice);
CREATE INDEX structure_results_worst ON structure_results (dice) WHERE dice IS NOT NULL;

CREATE TABLE lesion_results (
    LIKE lesion_results_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    scored_at timestamptz NOT NULL,
    PRIMARY KEY (result_id, structure, scored_at),
    FOREIGN KEY (result_id, scored_at) REFERENCES results (id, scored_at) ON UPDATE CASCADE
) PARTITION BY RANGE (scored_at);

CREATE TABLE detector_history (
    LIKE detector_history_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    scored_at timestamptz NOT NULL,
    PRIMARY KEY (result_id, scored_at),
    FOREIGN KEY (result_id, scored_at) REFERENCES results (id, scored_at) ON UPDATE CASCADE
) PARTITION BY RANGE (scored_at);

DO $$
DECLARE
    t text;
    month timestamp;
BEGIN
    FOREACH t IN ARRAY ARRAY['results', 'structure_results', 'lesion_results', 'detector_history'] LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
        FOR month IN
            SELECT generate_series(least(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month',
                                         (SELECT date_trunc('month', min(scored_at) AT TIME ZONE 'UTC')
                                          FROM results_unpartitioned)),
                                   date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
                                   interval '1 month')
        LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           t || '_' || to_char(month, 'YYYY_MM'), t,
                           month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
        END LOOP;
    END LOOP;
END $$;

INSERT INTO results (id, job_id, case_id, site, model, model_version, surface, grid, mean_dice, acquisition,
                     observed_at, scored_at, drift_pending, latest)
SELECT id, job_id, case_id, site, model, model_version, surface, grid, mean_dice, acquisition,
       observed_at, scored_at, drift_pending, latest FROM results_unpartitioned;
INSERT INTO structure_results SELECT s.*, r.scored_at
FROM structure_results_unpartitioned s JOIN results_unpartitioned r ON r.id = s.result_id;
INSERT INTO lesion_results SELECT l.*, r.scored_at
FROM lesion_results_unpartitioned l JOIN results_unpartitioned r ON r.id = l.result_id;
INSERT INTO detector_history SELECT d.*, r.scored_at
FROM detector_history_unpartitioned d JOIN results_unpartitioned r ON r.id = d.result_id;
DROP TABLE detector_history_unpartitioned, lesion_results_unpartitioned, structure_results_unpartitioned,
           results_unpartitioned;

-- The view exposes the structure rows' scored_at, so that a time filter on it
-- skips their other months. It joins on result_id alone: with scored_at also
-- equal, PostgreSQL takes the two equalities as independent, expects a few
-- rows from the join, and sorts every row of the window instead of walking
-- the Dice index to the panel's limit (5.9 s instead of 9 ms at 5M).
CREATE VIEW case_structure_results AS
SELECT s.site, c.case_key, r.model, r.model_version, s.structure,
       s.dice, s.hd95_mm, s.nsd, s.scored_at, 'scored'::text AS status
FROM results r
JOIN cases c ON c.id = r.case_id
JOIN structure_results s ON s.result_id = r.id
WHERE r.latest;
ANALYZE results, structure_results, lesion_results, detector_history;

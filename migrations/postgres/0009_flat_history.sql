-- Rollups: what the periodic gauges read instead of the raw history, so that
-- a refresh costs the same after a year as after a day.
--
-- Dice sums of scored results by case-time bucket, per site, model version and
-- structure ('all' holds each case's mean Dice), upserted in the transaction
-- that stores each result. Rolling windows of N >= 2 days read the daily
-- buckets of the last N UTC days (today included); the 1-day window reads the
-- hourly buckets of the last 24 hours (this hour included). Hourly buckets are
-- dropped after two days.
CREATE TABLE dice_daily (
    day           date NOT NULL,
    model         text NOT NULL,
    model_version text NOT NULL,
    site          text NOT NULL,
    structure     text NOT NULL,
    cases         bigint NOT NULL,
    dice_sum      double precision NOT NULL,
    PRIMARY KEY (day, model, model_version, site, structure)
);

CREATE TABLE dice_hourly (
    hour          timestamptz NOT NULL,
    model         text NOT NULL,
    model_version text NOT NULL,
    site          text NOT NULL,
    structure     text NOT NULL,
    cases         bigint NOT NULL,
    dice_sum      double precision NOT NULL,
    PRIMARY KEY (hour, model, model_version, site, structure)
);

INSERT INTO dice_daily (day, model, model_version, site, structure, cases, dice_sum)
SELECT (r.observed_at AT TIME ZONE 'UTC')::date, r.model, r.model_version, r.site, s.structure, count(*), sum(s.dice)
FROM results r JOIN structure_results s ON s.result_id = r.id
WHERE s.empty <> 'both' AND s.dice IS NOT NULL
GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT (observed_at AT TIME ZONE 'UTC')::date, model, model_version, site, 'all', count(*), sum(mean_dice)
FROM results WHERE mean_dice IS NOT NULL
GROUP BY 1, 2, 3, 4;

INSERT INTO dice_hourly (hour, model, model_version, site, structure, cases, dice_sum)
SELECT date_trunc('hour', r.observed_at), r.model, r.model_version, r.site, s.structure, count(*), sum(s.dice)
FROM results r JOIN structure_results s ON s.result_id = r.id
WHERE r.observed_at > now() - interval '2 days' AND s.empty <> 'both' AND s.dice IS NOT NULL
GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT date_trunc('hour', observed_at), model, model_version, site, 'all', count(*), sum(mean_dice)
FROM results WHERE observed_at > now() - interval '2 days' AND mean_dice IS NOT NULL
GROUP BY 1, 2, 3, 4;

-- The latest accepted upload per site and role, upserted with each upload.
CREATE TABLE site_uploads (
    site             text NOT NULL,
    role             text NOT NULL,
    last_received_at timestamptz NOT NULL,
    PRIMARY KEY (site, role)
);
INSERT INTO site_uploads (site, role, last_received_at)
SELECT c.site, s.role, max(s.received_at) FROM segmentations s JOIN cases c ON c.id = s.case_id
GROUP BY c.site, s.role;

-- Whether a result is its case's latest (the one listings and the dashboards
-- show), kept by the worker instead of a correlated max(id) per row.
ALTER TABLE results ADD COLUMN latest boolean NOT NULL DEFAULT true;
UPDATE results r SET latest = false
WHERE EXISTS (SELECT 1 FROM results n WHERE n.case_id = r.case_id AND n.id > r.id);
CREATE INDEX results_latest_site ON results (site, mean_dice, scored_at DESC) WHERE latest;
CREATE INDEX results_latest_stream ON results (model, model_version, site, scored_at) INCLUDE (id, case_id)
    WHERE latest;

CREATE OR REPLACE VIEW case_structure_results AS
SELECT r.site, c.case_key, r.model, r.model_version, s.structure,
       s.dice, s.hd95_mm, s.nsd, r.scored_at, 'scored'::text AS status
FROM results r
JOIN cases c ON c.id = r.case_id
JOIN structure_results s ON s.result_id = r.id
WHERE r.latest;
-- The worst structure results first, for the dashboards' worst-cases panel
-- across sites (one site's is answered by results_latest_stream). It replaces
-- the index by structure and Dice, which no query could use for an ordered
-- walk over several structures.
CREATE INDEX structure_results_worst ON structure_results (dice) WHERE dice IS NOT NULL;
DROP INDEX structure_results_dice;

-- Uploaded files apart from their metadata: the retention purge deletes their
-- rows (an UPDATE rewrote every index of the metadata row), and the metadata,
-- kept for years, stays small. A revision is purged once its file is gone.
CREATE TABLE segmentation_contents (
    segmentation_id bigint PRIMARY KEY REFERENCES segmentations (id),
    received_at     timestamptz NOT NULL,
    -- gzip-compressed canonical upload
    content         bytea NOT NULL
);
INSERT INTO segmentation_contents (segmentation_id, received_at, content)
SELECT id, received_at, content FROM segmentations WHERE content IS NOT NULL;
CREATE INDEX segmentation_contents_received ON segmentation_contents (received_at);
DROP INDEX segmentations_purgeable;
ALTER TABLE segmentations DROP COLUMN content, DROP COLUMN purged_at;

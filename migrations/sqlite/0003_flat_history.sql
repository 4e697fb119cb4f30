-- As migrations/postgres/0009: Dice rollups by case-time bucket (days as
-- 'YYYY-MM-DD', hours as stored times truncated to the hour), the latest upload
-- per site and role, and the latest-result flag.
CREATE TABLE dice_daily (
    day           TEXT NOT NULL,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    site          TEXT NOT NULL,
    structure     TEXT NOT NULL,
    cases         INTEGER NOT NULL,
    dice_sum      REAL NOT NULL,
    PRIMARY KEY (day, model, model_version, site, structure)
);

CREATE TABLE dice_hourly (
    hour          TEXT NOT NULL,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    site          TEXT NOT NULL,
    structure     TEXT NOT NULL,
    cases         INTEGER NOT NULL,
    dice_sum      REAL NOT NULL,
    PRIMARY KEY (hour, model, model_version, site, structure)
);

INSERT INTO dice_daily (day, model, model_version, site, structure, cases, dice_sum)
SELECT substr(r.observed_at, 1, 10), r.model, r.model_version, r.site, s.structure, count(*), sum(s.dice)
FROM results r JOIN structure_results s ON s.result_id = r.id
WHERE s.empty <> 'both' AND s.dice IS NOT NULL
GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT substr(observed_at, 1, 10), model, model_version, site, 'all', count(*), sum(mean_dice)
FROM results WHERE mean_dice IS NOT NULL
GROUP BY 1, 2, 3, 4;

INSERT INTO dice_hourly (hour, model, model_version, site, structure, cases, dice_sum)
SELECT substr(r.observed_at, 1, 13) || ':00:00.000000Z', r.model, r.model_version, r.site, s.structure, count(*),
       sum(s.dice)
FROM results r JOIN structure_results s ON s.result_id = r.id
WHERE r.observed_at > strftime('%Y-%m-%dT%H:%M:%S.000000Z', 'now', '-2 days')
  AND s.empty <> 'both' AND s.dice IS NOT NULL
GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT substr(observed_at, 1, 13) || ':00:00.000000Z', model, model_version, site, 'all', count(*), sum(mean_dice)
FROM results WHERE observed_at > strftime('%Y-%m-%dT%H:%M:%S.000000Z', 'now', '-2 days') AND mean_dice IS NOT NULL
GROUP BY 1, 2, 3, 4;

CREATE TABLE site_uploads (
    site             TEXT NOT NULL,
    role             TEXT NOT NULL,
    last_received_at TEXT NOT NULL,
    PRIMARY KEY (site, role)
);
INSERT INTO site_uploads (site, role, last_received_at)
SELECT c.site, s.role, max(s.received_at) FROM segmentations s JOIN cases c ON c.id = s.case_id
GROUP BY c.site, s.role;

ALTER TABLE results ADD COLUMN latest INTEGER NOT NULL DEFAULT 1;
UPDATE results SET latest = 0
WHERE EXISTS (SELECT 1 FROM results n WHERE n.case_id = results.case_id AND n.id > results.id);
CREATE INDEX results_latest_site ON results (site, mean_dice, scored_at DESC) WHERE latest;
CREATE INDEX results_latest_stream ON results (model, model_version, site, scored_at) WHERE latest;

DROP VIEW case_structure_results;
CREATE VIEW case_structure_results AS
SELECT r.site, c.case_key, r.model, r.model_version, s.structure,
       s.dice, s.hd95_mm, s.nsd, r.scored_at, 'scored' AS status
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

-- As in PostgreSQL: uploaded files apart from their metadata, deleted by the
-- retention purge.
CREATE TABLE segmentation_contents (
    segmentation_id INTEGER PRIMARY KEY REFERENCES segmentations (id),
    received_at     TEXT NOT NULL,
    content         BLOB NOT NULL
);
INSERT INTO segmentation_contents (segmentation_id, received_at, content)
SELECT id, received_at, content FROM segmentations WHERE content IS NOT NULL;
CREATE INDEX segmentation_contents_received ON segmentation_contents (received_at);
DROP INDEX segmentations_purgeable;
ALTER TABLE segmentations DROP COLUMN content;
ALTER TABLE segmentations DROP COLUMN purged_at;

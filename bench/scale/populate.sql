-- Synthetic scored history for the scale benchmark, written the way the
-- service writes it (one job, one result and :structures structure results
-- per case, rollups and last uploads as the worker and ingest keep them).
-- Deterministic: every value derives from the case number.
--
-- psql variables: cases, span_days, sites, models, structures.
\set ON_ERROR_STOP on
SET synchronous_commit = off;

CREATE TEMP TABLE synth AS
SELECT g AS id,
       'site' || lpad((g % :sites)::text, 3, '0') AS site,
       'model' || ((g / :sites) % :models) AS model,
       now() - (:span_days * interval '1 day') * (1 - g::float8 / :cases) AS observed_at
FROM generate_series(1, :cases) g;

-- Dice of case g, structure k: deterministic, in [0.75, 0.95).
CREATE FUNCTION pg_temp.dice(g bigint, k int) RETURNS float8 IMMUTABLE LANGUAGE sql
AS $$ SELECT 0.75 + 0.2 * ((hashint8(g * 64 + k)::bigint & 65535) / 65536.0) $$;

INSERT INTO cases (id, site, case_key, created_at)
SELECT id, site, 'case-' || id, observed_at FROM synth;

INSERT INTO segmentations (id, case_id, role, revision, sha256, format, content_bytes, voxels, grid,
                           model, model_version, reader, acquisition, observed_at, received_at, structures)
SELECT 2 * s.id - 1 + r.n, s.id, r.role, 1, sha256(((2 * s.id + r.n)::text)::bytea), 'nifti', 64, 78643200,
       '{"shape": [512, 512, 300], "spacing_mm": [0.8, 0.8, 1.5]}',
       CASE WHEN r.n = 0 THEN s.model END, CASE WHEN r.n = 0 THEN 'v1' END, CASE WHEN r.n = 1 THEN 'default' END,
       '{"scanner_manufacturer": "SIEMENS", "protocol": "abdomen", "slice_thickness_mm": 1.5}',
       s.observed_at, s.observed_at + interval '1 hour',
       ARRAY(SELECT 'structure' || lpad(k::text, 2, '0') FROM generate_series(1, :structures) k)
FROM synth s CROSS JOIN (VALUES (0, 'prediction'), (1, 'reference')) AS r (n, role);

-- Stand-ins for the stored files (the benchmark measures the purge, not gzip).
INSERT INTO segmentation_contents (segmentation_id, received_at, content)
SELECT id, received_at, decode(repeat('00', 64), 'hex') FROM segmentations;

INSERT INTO jobs (id, case_id, prediction_id, reference_id, status, attempts, run_after, created_at, finished_at)
SELECT id, id, 2 * id - 1, 2 * id, 'done', 1, observed_at + interval '1 hour', observed_at + interval '1 hour',
       observed_at + interval '1 hour 1 minute'
FROM synth;

INSERT INTO results (id, job_id, case_id, site, model, model_version, surface, grid, mean_dice, acquisition,
                     observed_at, scored_at, drift_pending, latest)
SELECT id, id, id, site, model, 'v1', 'boundary_voxel',
       '{"shape": [512, 512, 300], "spacing_mm": [0.8, 0.8, 1.5]}',
       (SELECT avg(pg_temp.dice(id, k)) FROM generate_series(1, :structures) k),
       '{"scanner_manufacturer": "SIEMENS", "protocol": "abdomen", "slice_thickness_mm": 1.5}',
       observed_at, observed_at + interval '1 hour 1 minute', false, true
FROM synth;

-- The name is the structure's, so stored as NULL (as the worker stores it);
-- scored_at is the result's (the month partition key, migration 0020).
INSERT INTO structure_results (result_id, position, structure, label, pred_voxels, ref_voxels, tp,
                               pred_volume_ml, ref_volume_ml, dice, hd_mm, hd95_mm, assd_mm, masd_mm, nsd,
                               tolerance_mm, site, scored_at)
SELECT s.id, k - 1, 'structure' || lpad(k::text, 2, '0'), k,
       100000, 100000, round(100000 * pg_temp.dice(s.id, k)), 96.0, 96.0, pg_temp.dice(s.id, k),
       12.5, 4.2, 1.1, 1.2, 0.93, 2.0, s.site, s.observed_at + interval '1 hour 1 minute'
FROM synth s CROSS JOIN generate_series(1, :structures) k;

\o /dev/null
SELECT setval(pg_get_serial_sequence('cases', 'id'), :cases);
SELECT setval(pg_get_serial_sequence('segmentations', 'id'), 2 * :cases);
SELECT setval(pg_get_serial_sequence('jobs', 'id'), :cases);
SELECT setval(pg_get_serial_sequence('results', 'id'), :cases);
\o

-- What the worker upserts with each result, and ingest with each upload.
INSERT INTO dice_daily (day, model, model_version, site, structure, cases, dice_sum)
SELECT (r.observed_at AT TIME ZONE 'UTC')::date, r.model, r.model_version, r.site, s.structure, count(*), sum(s.dice)
FROM results r JOIN structure_results s ON s.result_id = r.id AND s.scored_at = r.scored_at GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT (observed_at AT TIME ZONE 'UTC')::date, model, model_version, site, 'all', count(*), sum(mean_dice)
FROM results GROUP BY 1, 2, 3, 4;
INSERT INTO dice_hourly (hour, model, model_version, site, structure, cases, dice_sum)
SELECT date_trunc('hour', r.observed_at), r.model, r.model_version, r.site, s.structure, count(*), sum(s.dice)
FROM results r JOIN structure_results s ON s.result_id = r.id AND s.scored_at = r.scored_at
WHERE r.observed_at > now() - interval '2 days' GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT date_trunc('hour', observed_at), model, model_version, site, 'all', count(*), sum(mean_dice)
FROM results WHERE observed_at > now() - interval '2 days' GROUP BY 1, 2, 3, 4;
INSERT INTO site_uploads (site, role, last_received_at)
SELECT c.site, s.role, max(s.received_at) FROM segmentations s JOIN cases c ON c.id = s.case_id GROUP BY 1, 2;

-- A baseline per model version and every detector of every stream, as the
-- drift task leaves them: what /metrics exports for the network.
INSERT INTO baselines (model, model_version, version, source, created_by)
SELECT DISTINCT model, 'v1', 1, 'first_cases', 'bench' FROM synth;
INSERT INTO baseline_samples (baseline_id, structure, dice)
SELECT b.id, st.structure, ARRAY(SELECT 0.85 + 0.001 * i FROM generate_series(1, 100) i)
FROM baselines b
CROSS JOIN (SELECT 'structure' || lpad(k::text, 2, '0') AS structure FROM generate_series(1, :structures) k
            UNION ALL SELECT 'all') st;
INSERT INTO detector_state (site, model, model_version, structure, detector, baseline_id, t, statistic, limit_value)
SELECT streams.site, b.model, 'v1', st.structure, d.detector, b.id, 100, 0.5, 0.3
FROM baselines b
CROSS JOIN (SELECT DISTINCT site FROM synth UNION ALL SELECT 'all') streams
CROSS JOIN (SELECT 'structure' || lpad(k::text, 2, '0') AS structure FROM generate_series(1, :structures) k
            UNION ALL SELECT 'all') st
CROSS JOIN (VALUES ('pit_ewma'), ('cusum'), ('guard_rail')) AS d (detector)
WHERE st.structure <> 'all' OR d.detector = 'pit_ewma';
-- Their streams with their (stream, detector) pairs, which the drift feed
-- counts when it splits the false-alert budget: a new version's streams get
-- the network's targets, as in production.
INSERT INTO drift_streams (model, model_version, site, structure, baseline_id, state, pairs, latest_at)
SELECT b.model, 'v1', streams.site, st.structure, b.id,
       '{"first_at": null, "latest_at": null, "window": {"buckets": []}, "detectors": {}}',
       CASE WHEN st.structure = 'all' THEN 1 ELSE 3 END, (SELECT max(observed_at) FROM results)
FROM baselines b
CROSS JOIN (SELECT DISTINCT site FROM synth UNION ALL SELECT 'all') streams
CROSS JOIN (SELECT 'structure' || lpad(k::text, 2, '0') AS structure FROM generate_series(1, :structures) k
            UNION ALL SELECT 'all') st;

ANALYZE;

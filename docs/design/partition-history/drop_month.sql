-- PROTOTYPE of the month drop with keepers moved to DEFAULT (psql vars: month=2026_11, cutoff).
-- Detaching a referencing partition keeps its foreign key, so the child
-- months are copied (keepers) and DROPped, then the results month is
-- DETACHed (a referenced partition cannot be DROPped directly) and dropped.
BEGIN;
SELECT pg_advisory_xact_lock(hashtext('segwatch partitions'));
-- keepers: results of cases still active by the results retention rule
CREATE TEMPORARY TABLE keep ON COMMIT DROP AS
SELECT r.id FROM results_:month r
WHERE r.drift_pending
   OR EXISTS (SELECT 1 FROM segmentations s WHERE s.case_id = r.case_id AND s.received_at >= :'cutoff')
   OR EXISTS (SELECT 1 FROM results n WHERE n.case_id = r.case_id AND n.scored_at >= :'cutoff')
   OR EXISTS (SELECT 1 FROM jobs j WHERE j.case_id = r.case_id AND j.status IN ('queued', 'running'));
CREATE TEMPORARY TABLE keep_r ON COMMIT DROP AS SELECT * FROM results_:month WHERE id IN (SELECT id FROM keep);
CREATE TEMPORARY TABLE keep_s ON COMMIT DROP AS SELECT * FROM structure_results_:month WHERE result_id IN (SELECT id FROM keep);
CREATE TEMPORARY TABLE keep_l ON COMMIT DROP AS SELECT * FROM lesion_results_:month WHERE result_id IN (SELECT id FROM keep);
CREATE TEMPORARY TABLE keep_d ON COMMIT DROP AS SELECT * FROM detector_history_:month WHERE result_id IN (SELECT id FROM keep);
DROP TABLE detector_history_:month, lesion_results_:month, structure_results_:month;
ALTER TABLE results DETACH PARTITION results_:month;
DROP TABLE results_:month;
INSERT INTO results SELECT * FROM keep_r;
INSERT INTO structure_results SELECT * FROM keep_s;
INSERT INTO lesion_results SELECT * FROM keep_l;
INSERT INTO detector_history SELECT * FROM keep_d;
SELECT (SELECT count(*) FROM keep) AS kept, (SELECT count(*) FROM results) AS results,
       (SELECT count(*) FROM structure_results) AS structure_results,
       (SELECT count(*) FROM lesion_results) AS lesion_results, (SELECT count(*) FROM detector_history) AS detector_history,
       (SELECT count(*) FROM results_default WHERE id IN (SELECT id FROM keep)) AS kept_in_default,
       (SELECT count(*) FROM detector_history_default WHERE result_id IN (SELECT id FROM keep)) AS kept_history;
ROLLBACK;

-- Periodic work flat in history length: the retention purge finds its
-- candidates by received_at and the scored jobs of each through an index on
-- either side; the job-count gauges read only active jobs; the rolling windows
-- filter results by case time.
CREATE INDEX segmentations_purgeable ON segmentations (received_at) WHERE content IS NOT NULL;
CREATE INDEX jobs_reference ON jobs (reference_id);
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('queued', 'running');
CREATE INDEX results_observed ON results (observed_at);

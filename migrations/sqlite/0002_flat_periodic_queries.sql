-- As migrations/postgres/0008: the purge's candidates and the job-count gauges
-- read small partial indexes (jobs_reference and results_observed are in 0001).
CREATE INDEX segmentations_purgeable ON segmentations (received_at) WHERE content IS NOT NULL;
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('queued', 'running');

-- Drift streams of other metrics than Dice (docs/drift.md#metrics): lesion-wise
-- sensitivity and ECE, for structures whose schema lists them in
-- `drift_metrics`. Baseline samples, streams, detector states, parameter sets
-- and incidents are keyed by the metric too; every existing row watches Dice.
-- Samples of ECE hold the ECE values as scored (detectors get 1 − ECE).
ALTER TABLE baseline_samples
    ADD COLUMN metric text NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece'));
ALTER TABLE baseline_samples DROP CONSTRAINT baseline_samples_pkey;
ALTER TABLE baseline_samples ADD PRIMARY KEY (baseline_id, metric, structure);

ALTER TABLE drift_streams
    ADD COLUMN metric text NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece'));
ALTER TABLE drift_streams DROP CONSTRAINT drift_streams_pkey;
ALTER TABLE drift_streams ADD PRIMARY KEY (model, model_version, site, structure, metric);

ALTER TABLE detector_state
    ADD COLUMN metric text NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece'));
ALTER TABLE detector_state DROP CONSTRAINT detector_state_pkey;
ALTER TABLE detector_state ADD PRIMARY KEY (site, model, model_version, structure, metric, detector);

ALTER TABLE detector_parameters
    ADD COLUMN metric text NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece'));
DROP INDEX detector_parameters_set;
CREATE UNIQUE INDEX detector_parameters_set
    ON detector_parameters (model, model_version, site, structure, metric, baseline_id, md5(parameters::text));

ALTER TABLE incidents
    ADD COLUMN metric text NOT NULL DEFAULT 'dice' CHECK (metric IN ('dice', 'lesion_sensitivity', 'ece'));

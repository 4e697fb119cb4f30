-- Whether a model version is active (a prediction received in the last days),
-- checked on every prediction to bound the models and versions one key can add.
CREATE INDEX segmentations_model_activity ON segmentations (model, model_version, received_at)
    WHERE role = 'prediction';

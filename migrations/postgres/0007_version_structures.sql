-- The structures of each upload, and those each model version has gathered
-- through scored pairs: a version may gather at most limits.max_structures,
-- since every structure is a set of metric series.
ALTER TABLE segmentations ADD COLUMN structures text[] NOT NULL DEFAULT '{}';

CREATE TABLE version_structures (
    model         text NOT NULL,
    model_version text NOT NULL,
    structure     text NOT NULL,
    PRIMARY KEY (model, model_version, structure)
);

-- Lesion-wise results of the schema's multi-instance structures (docs/lesions.md):
-- one row per such structure of a scored result, holding its metrics and its
-- reference lesions as `eval`'s JSON reports them (the case API returns it).
CREATE TABLE lesion_results (
    result_id bigint NOT NULL REFERENCES results (id),
    structure text NOT NULL,
    metrics   jsonb NOT NULL,
    PRIMARY KEY (result_id, structure)
);

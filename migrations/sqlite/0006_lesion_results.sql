-- Lesion-wise results, as in PostgreSQL's 0012; the metrics are JSON text.
CREATE TABLE lesion_results (
    result_id INTEGER NOT NULL REFERENCES results (id),
    structure TEXT NOT NULL,
    metrics   TEXT NOT NULL,
    PRIMARY KEY (result_id, structure)
);

-- no-transaction
-- As in PostgreSQL's 0015: identical bytes are one upload only within a model
-- version, and each version's newest result of a case is flagged latest.
-- SQLite cannot drop a table's UNIQUE constraint, so the table is rebuilt
-- (https://www.sqlite.org/lang_altertable.html#otheralter): with foreign keys
-- off, which only works outside a transaction, and checked before commit.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE segmentations_rebuilt (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id          INTEGER NOT NULL REFERENCES cases (id),
    role             TEXT NOT NULL CHECK (role IN ('prediction', 'reference')),
    revision         INTEGER NOT NULL,
    sha256           BLOB NOT NULL,
    format           TEXT NOT NULL CHECK (format IN ('nifti', 'dicom_seg')),
    content_bytes    INTEGER NOT NULL,
    voxels           INTEGER NOT NULL,
    grid             TEXT NOT NULL,
    model            TEXT,
    model_version    TEXT,
    acquisition      TEXT NOT NULL DEFAULT '{}',
    provenance       TEXT,
    observed_at      TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    sop_instance_uid TEXT,
    -- JSON array of the structure keys the upload holds
    structures       TEXT NOT NULL DEFAULT '[]',
    UNIQUE (case_id, role, revision),
    CHECK (role <> 'prediction' OR (model IS NOT NULL AND model_version IS NOT NULL))
);
INSERT INTO segmentations_rebuilt (id, case_id, role, revision, sha256, format, content_bytes, voxels, grid,
                                   model, model_version, acquisition, provenance, observed_at, received_at,
                                   sop_instance_uid, structures)
SELECT id, case_id, role, revision, sha256, format, content_bytes, voxels, grid,
       model, model_version, acquisition, provenance, observed_at, received_at,
       sop_instance_uid, structures
FROM segmentations;
DROP TABLE segmentations;
ALTER TABLE segmentations_rebuilt RENAME TO segmentations;
CREATE UNIQUE INDEX segmentations_content
    ON segmentations (case_id, role, sha256, coalesce(model, ''), coalesce(model_version, ''));
CREATE UNIQUE INDEX segmentations_sop_instance ON segmentations (case_id, role, sop_instance_uid)
    WHERE sop_instance_uid IS NOT NULL;
CREATE INDEX segmentations_model_activity ON segmentations (model, model_version, received_at)
    WHERE role = 'prediction';
CREATE INDEX segmentations_received ON segmentations (received_at);

UPDATE results SET latest = 1
WHERE NOT latest
  AND NOT EXISTS (SELECT 1 FROM results n
                  WHERE n.case_id = results.case_id AND n.model = results.model
                    AND n.model_version = results.model_version AND n.id > results.id);
COMMIT;
PRAGMA foreign_keys = ON;

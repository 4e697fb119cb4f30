-- As in PostgreSQL's 0017: each reference names its reader by a pseudonym
-- ('default' for every reference stored before); identical bytes are one
-- upload only within a reader. (SQLite cannot add a CHECK to an existing
-- table; the service sets the reader of every reference and of no prediction.)
ALTER TABLE segmentations ADD COLUMN reader TEXT;
UPDATE segmentations SET reader = 'default' WHERE role = 'reference';
DROP INDEX segmentations_content;
CREATE UNIQUE INDEX segmentations_content
    ON segmentations (case_id, role, sha256, coalesce(model, ''), coalesce(model_version, ''),
                      coalesce(reader, ''));

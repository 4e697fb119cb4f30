-- Several readers: each reference names its reader by a pseudonym ('default'
-- when the client gives none, as for every reference stored before); a
-- prediction has none. Identical bytes are one upload only within a reader.
ALTER TABLE segmentations ADD COLUMN reader text;
UPDATE segmentations SET reader = 'default' WHERE role = 'reference';
ALTER TABLE segmentations ADD CONSTRAINT segmentations_reader
    CHECK ((role = 'reference') = (reader IS NOT NULL));
DROP INDEX segmentations_content;
CREATE UNIQUE INDEX segmentations_content
    ON segmentations (case_id, role, sha256, coalesce(model, ''), coalesce(model_version, ''),
                      coalesce(reader, ''));

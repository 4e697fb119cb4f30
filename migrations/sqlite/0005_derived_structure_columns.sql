-- As PostgreSQL's 0011 drops them: the empty side, fp, fn, IoU, precision and
-- recall are derived on read from the voxel counts, and a name equal to the
-- structure's is stored as NULL. The embedded store lists by a structure from
-- `results`, without PostgreSQL's copy of the site.
ALTER TABLE structure_results DROP COLUMN empty;
ALTER TABLE structure_results DROP COLUMN fp;
ALTER TABLE structure_results DROP COLUMN fn;
ALTER TABLE structure_results DROP COLUMN iou;
ALTER TABLE structure_results DROP COLUMN precision;
ALTER TABLE structure_results DROP COLUMN recall;
UPDATE structure_results SET name = NULL WHERE name = structure;

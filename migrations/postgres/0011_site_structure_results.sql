-- One site's structure results in Dice order, for the case listing by a
-- structure and the dashboards' worst-cases panel of one site: both walk this
-- index and stop at their limit instead of reading and sorting all of the
-- site's latest results. `site` is copied from the result; results that are no
-- longer their case's latest (a case scored again) are skipped on the join.
--
-- Paid for by columns that are exactly derivable on read with the engine's
-- own computation: `empty` (which voxel count is 0), fp and fn (the counts
-- less tp), IoU, precision and recall; and `name`, NULL where it is the
-- structure's.
ALTER TABLE structure_results
    ADD COLUMN site text,
    DROP COLUMN empty,
    DROP COLUMN fp,
    DROP COLUMN fn,
    DROP COLUMN iou,
    DROP COLUMN precision,
    DROP COLUMN recall;
UPDATE structure_results s SET site = r.site, name = NULLIF(s.name, s.structure)
FROM results r WHERE r.id = s.result_id;
ALTER TABLE structure_results ALTER COLUMN site SET NOT NULL;
CREATE INDEX structure_results_site ON structure_results (site, dice);

-- The view filters on the structure row's site, so that the planner can walk
-- the index above for one site.
CREATE OR REPLACE VIEW case_structure_results AS
SELECT s.site, c.case_key, r.model, r.model_version, s.structure,
       s.dice, s.hd95_mm, s.nsd, r.scored_at, 'scored'::text AS status
FROM structure_results s
JOIN results r ON r.id = s.result_id
JOIN cases c ON c.id = r.case_id
WHERE r.latest;

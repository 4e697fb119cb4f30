-- Shadow mode: a case holds predictions of several model versions, each scored
-- against the same reference. Two versions may predict the same bytes, so
-- identical bytes are one upload only within a model version; and each
-- version's newest result of a case is flagged latest.
ALTER TABLE segmentations DROP CONSTRAINT segmentations_case_id_role_sha256_key;
CREATE UNIQUE INDEX segmentations_content
    ON segmentations (case_id, role, sha256, coalesce(model, ''), coalesce(model_version, ''));

UPDATE results r SET latest = true
WHERE NOT r.latest
  AND NOT EXISTS (SELECT 1 FROM results n
                  WHERE n.case_id = r.case_id AND n.model = r.model
                    AND n.model_version = r.model_version AND n.id > r.id);

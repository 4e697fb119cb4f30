-- DICOMweb uploads are idempotent on SOPInstanceUID.
ALTER TABLE segmentations ADD COLUMN sop_instance_uid text;
CREATE UNIQUE INDEX segmentations_sop_instance ON segmentations (case_id, role, sop_instance_uid)
    WHERE sop_instance_uid IS NOT NULL;

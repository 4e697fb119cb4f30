-- As migrations/postgres/0022: a prediction's probabilities (gzip float
-- NIfTI, de-identified) and the labels of their channels (JSON array) beside
-- its stored file; NULL for every other upload.
ALTER TABLE segmentation_contents ADD COLUMN probabilities BLOB;
ALTER TABLE segmentation_contents ADD COLUMN probability_labels TEXT;

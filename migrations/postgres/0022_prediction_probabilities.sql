-- A prediction uploaded with a float NIfTI of probabilities (multipart
-- PUT …/prediction): the probabilities, de-identified and gzip-compressed,
-- beside the label file they came with, and the labels of their channels in
-- order as a JSON array ("[1,2,5]"). NULL for every other upload. Columns of
-- the file's row, so the monthly partitions made LIKE segmentation_contents
-- carry them and the retention purge takes them with the file.
ALTER TABLE segmentation_contents
    ADD COLUMN probabilities      bytea,
    ADD COLUMN probability_labels text;

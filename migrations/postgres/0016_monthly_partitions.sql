-- Stored files by month of receipt (UTC), so that retention drops a month
-- whose files are all past it as a whole partition instead of deleting them
-- row by row (Store::maintain_partitions); the files of that month no scored
-- job used are kept, moved to the DEFAULT partition. The month at the
-- retention boundary and the DEFAULT partition are purged in batches as
-- before (Store::purge_scored). Partitions are named segmentation_contents_YYYY_MM;
-- the service creates this month and the next two ahead, and the DEFAULT
-- partition takes files of any month without one (older than the months
-- created here, or received while no service ran to create theirs).
--
-- PostgreSQL needs the partition key in the primary key: a file is keyed by
-- its segmentation and received_at (its segmentation's, stored with it in one
-- transaction, which is what keeps one file per segmentation).
ALTER TABLE segmentation_contents RENAME TO segmentation_contents_unpartitioned;
ALTER INDEX segmentation_contents_pkey RENAME TO segmentation_contents_unpartitioned_pkey;
ALTER INDEX segmentation_contents_received RENAME TO segmentation_contents_unpartitioned_received;
ALTER TABLE segmentation_contents_unpartitioned
    RENAME CONSTRAINT segmentation_contents_segmentation_id_fkey TO segmentation_contents_unpartitioned_fkey;

CREATE TABLE segmentation_contents (
    segmentation_id bigint NOT NULL REFERENCES segmentations (id),
    received_at     timestamptz NOT NULL,
    -- gzip-compressed canonical upload
    content         bytea NOT NULL,
    PRIMARY KEY (segmentation_id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX segmentation_contents_received ON segmentation_contents (received_at);
CREATE TABLE segmentation_contents_default PARTITION OF segmentation_contents DEFAULT;

-- Last month, this month and the next two, bounds at UTC midnight.
DO $$
DECLARE
    month timestamp;
BEGIN
    FOR month IN
        SELECT generate_series(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month',
                               date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
                               interval '1 month')
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF segmentation_contents FOR VALUES FROM (%L) TO (%L)',
                       'segmentation_contents_' || to_char(month, 'YYYY_MM'),
                       month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
    END LOOP;
END $$;

INSERT INTO segmentation_contents (segmentation_id, received_at, content)
SELECT segmentation_id, received_at, content FROM segmentation_contents_unpartitioned;
DROP TABLE segmentation_contents_unpartitioned;
ANALYZE segmentation_contents;

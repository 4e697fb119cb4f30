-- Probabilistic scores of a structure whose prediction kept its probabilities
-- (a FRACTIONAL PROBABILITY SEG segment), NULL for every other structure:
-- soft Dice, Brier score, expected calibration error, and the reliability
-- diagram as compact JSON text ([[count, mean probability, observed
-- frequency], ...], the equal-width bins then p = 1; nulls for empty bins).
-- Columns, not a table of their own, so that the monthly partitions made
-- LIKE structure_results carry them and retention deletes them with the row.
ALTER TABLE structure_results
    ADD COLUMN soft_dice   double precision,
    ADD COLUMN brier       double precision,
    ADD COLUMN ece         double precision,
    ADD COLUMN reliability text;

-- The rollups gain the sums of the rolling soft Dice and ECE gauges: cases
-- with probabilities of the structure, and their soft Dice and ECE sums.
ALTER TABLE dice_daily
    ADD COLUMN probabilistic_cases bigint NOT NULL DEFAULT 0,
    ADD COLUMN soft_dice_sum       double precision NOT NULL DEFAULT 0,
    ADD COLUMN ece_sum             double precision NOT NULL DEFAULT 0;
ALTER TABLE dice_hourly
    ADD COLUMN probabilistic_cases bigint NOT NULL DEFAULT 0,
    ADD COLUMN soft_dice_sum       double precision NOT NULL DEFAULT 0,
    ADD COLUMN ece_sum             double precision NOT NULL DEFAULT 0;

-- As migrations/postgres/0019: probabilistic scores as nullable structure
-- columns (the reliability diagram as compact JSON text), and their sums in
-- the rollups.
ALTER TABLE structure_results ADD COLUMN soft_dice REAL;
ALTER TABLE structure_results ADD COLUMN brier REAL;
ALTER TABLE structure_results ADD COLUMN ece REAL;
ALTER TABLE structure_results ADD COLUMN reliability TEXT;

ALTER TABLE dice_daily ADD COLUMN probabilistic_cases INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dice_daily ADD COLUMN soft_dice_sum REAL NOT NULL DEFAULT 0;
ALTER TABLE dice_daily ADD COLUMN ece_sum REAL NOT NULL DEFAULT 0;
ALTER TABLE dice_hourly ADD COLUMN probabilistic_cases INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dice_hourly ADD COLUMN soft_dice_sum REAL NOT NULL DEFAULT 0;
ALTER TABLE dice_hourly ADD COLUMN ece_sum REAL NOT NULL DEFAULT 0;

-- Compact detector history, as in PostgreSQL's 0010: a stream's parameter set
-- stored once per stream and baseline while it stays the same, and one row per
-- fed case holding every stream's step. The arrays are JSON text; a value that
-- is NaN in PostgreSQL is null here.
CREATE TABLE detector_parameters (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    site          TEXT NOT NULL,
    structure     TEXT NOT NULL,
    baseline_id   INTEGER NOT NULL REFERENCES baselines (id),
    parameters    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (model, model_version, site, structure, baseline_id, parameters)
);

-- See migrations/postgres/0010_compact_detector_history.sql for the layout.
CREATE TABLE detector_history (
    result_id  INTEGER PRIMARY KEY REFERENCES results (id),
    fed_at     TEXT NOT NULL,
    pairs      INTEGER NOT NULL,
    parameters TEXT NOT NULL,
    t          TEXT NOT NULL,
    flags      TEXT NOT NULL,
    vals       TEXT NOT NULL
);

-- The rows of detector_updates move to the new layout, then it goes.
CREATE TEMPORARY TABLE old_steps AS
SELECT u.result_id, u.model, u.model_version, u.site, u.structure, u.baseline_id,
       min(u.t) AS t, max(json_extract(u.parameters, '$.pairs')) AS pairs, min(u.at) AS fed_at,
       json_object(
           'target_cases', max(json_extract(u.parameters, '$.target_cases')),
           -- only the CUSUM's design names it; streams without one get the default
           'failure_threshold', coalesce(max(json_extract(u.parameters, '$.design.threshold')), 0.5),
           'designs', json_group_array(json(json_extract(u.parameters, '$.design'))
                                       ORDER BY CASE u.detector WHEN 'cusum' THEN 0 WHEN 'guard_rail' THEN 1 ELSE 2 END)
       ) AS parameters,
       max(u.late) + sum(CASE WHEN u.alarm THEN CASE u.detector WHEN 'cusum' THEN 2 WHEN 'guard_rail' THEN 4 ELSE 8 END
                              ELSE 0 END) AS flags,
       json_array(
           max(CASE WHEN u.detector = 'cusum' THEN u.input END),
           max(CASE WHEN u.detector = 'cusum' THEN u.statistic END),
           max(CASE WHEN u.detector = 'cusum' THEN u.limit_value END),
           max(CASE WHEN u.detector = 'guard_rail' THEN u.input END),
           max(CASE WHEN u.detector = 'guard_rail' THEN u.statistic END),
           max(CASE WHEN u.detector = 'guard_rail' THEN u.limit_value END),
           max(CASE WHEN u.detector = 'pit_ewma' THEN u.input END),
           max(CASE WHEN u.detector = 'pit_ewma' THEN u.statistic END),
           max(CASE WHEN u.detector = 'pit_ewma' THEN u.limit_value END)
       ) AS vals
FROM detector_updates u
GROUP BY u.result_id, u.model, u.model_version, u.site, u.structure, u.baseline_id;

INSERT INTO detector_parameters (model, model_version, site, structure, baseline_id, parameters, created_at)
SELECT model, model_version, site, structure, baseline_id, parameters, min(fed_at)
FROM old_steps
GROUP BY model, model_version, site, structure, baseline_id, parameters;

INSERT INTO detector_history (result_id, fed_at, pairs, parameters, t, flags, vals)
SELECT s.result_id, min(s.fed_at), max(s.pairs),
       json_group_array(p.id ORDER BY s.site, s.structure),
       json_group_array(s.t ORDER BY s.site, s.structure),
       json_group_array(s.flags ORDER BY s.site, s.structure),
       (SELECT json_group_array(v.value ORDER BY o.site, o.structure, v.key)
        FROM old_steps o, json_each(o.vals) v WHERE o.result_id = s.result_id)
FROM old_steps s
JOIN detector_parameters p
  ON p.model = s.model AND p.model_version = s.model_version AND p.site = s.site
 AND p.structure = s.structure AND p.baseline_id = s.baseline_id AND p.parameters = s.parameters
GROUP BY s.result_id;

DROP TABLE old_steps;
DROP TABLE detector_updates;

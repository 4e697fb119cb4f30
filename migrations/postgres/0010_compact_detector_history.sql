-- Compact detector history: what a stream's detectors were computed with is
-- stored once per stream and baseline, for as long as it stays the same, and
-- each fed case is one row holding every stream's step (about 1.7 KB a case
-- with 15 structures, instead of 92 rows and 54 KB with a parameters copy each).
-- The rows of detector_updates move to the new layout (values as 4-byte
-- floats), then it goes.

-- A stream's parameter set: the target run length, the failure threshold and
-- each running detector's design (drift::feed::Parameters).
CREATE TABLE detector_parameters (
    id            serial PRIMARY KEY,
    model         text NOT NULL,
    model_version text NOT NULL,
    site          text NOT NULL,
    structure     text NOT NULL,
    baseline_id   bigint NOT NULL REFERENCES baselines (id),
    parameters    jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX detector_parameters_set
    ON detector_parameters (model, model_version, site, structure, baseline_id, md5(parameters::text));

-- One row per fed case. Stream i of the case is detector_parameters
-- parameters[i] (which names the stream); t[i] counts the stream's cases since
-- its baseline started; flags[i] has bit 0 for a late case and bit 1 + d when
-- detector d alarmed; vals[9(i-1)+3d+1 .. +3] are its (input, statistic,
-- limit), d indexing (cusum, guard_rail, pit_ewma), NaN where it does not run.
CREATE TABLE detector_history (
    result_id  bigint PRIMARY KEY REFERENCES results (id),
    fed_at     timestamptz NOT NULL DEFAULT now(),
    pairs      integer NOT NULL,
    parameters integer[] NOT NULL,
    t          integer[] NOT NULL,
    flags      smallint[] NOT NULL,
    vals       real[] NOT NULL
);

-- One row per (case, stream) of the old history.
CREATE TEMPORARY TABLE old_steps AS
SELECT u.result_id, u.model, u.model_version, u.site, u.structure, u.baseline_id,
       min(u.t) AS t, max((u.parameters->>'pairs')::integer) AS pairs, min(u.at) AS fed_at,
       jsonb_build_object(
           'target_cases', max((u.parameters->>'target_cases')::float8),
           -- only the CUSUM's design names it; streams without one get the default
           'failure_threshold', coalesce(max((u.parameters->'design'->>'threshold')::float8), 0.5),
           'designs', jsonb_agg(u.parameters->'design'
                                ORDER BY array_position(ARRAY['cusum', 'guard_rail', 'pit_ewma'], u.detector))
       ) AS parameters,
       (CASE WHEN bool_or(u.late) THEN 1 ELSE 0 END
        + sum(CASE WHEN u.alarm THEN 1 << array_position(ARRAY['cusum', 'guard_rail', 'pit_ewma'], u.detector)
                   ELSE 0 END))::smallint AS flags,
       ARRAY[
           coalesce(max(u.input) FILTER (WHERE u.detector = 'cusum'), 'NaN'),
           coalesce(max(u.statistic) FILTER (WHERE u.detector = 'cusum'), 'NaN'),
           coalesce(max(u.limit_value) FILTER (WHERE u.detector = 'cusum'), 'NaN'),
           coalesce(max(u.input) FILTER (WHERE u.detector = 'guard_rail'), 'NaN'),
           coalesce(max(u.statistic) FILTER (WHERE u.detector = 'guard_rail'), 'NaN'),
           coalesce(max(u.limit_value) FILTER (WHERE u.detector = 'guard_rail'), 'NaN'),
           coalesce(max(u.input) FILTER (WHERE u.detector = 'pit_ewma'), 'NaN'),
           coalesce(max(u.statistic) FILTER (WHERE u.detector = 'pit_ewma'), 'NaN'),
           coalesce(max(u.limit_value) FILTER (WHERE u.detector = 'pit_ewma'), 'NaN')
       ]::real[] AS vals
FROM detector_updates u
GROUP BY u.result_id, u.model, u.model_version, u.site, u.structure, u.baseline_id;

INSERT INTO detector_parameters (model, model_version, site, structure, baseline_id, parameters, created_at)
SELECT model, model_version, site, structure, baseline_id, parameters, min(fed_at)
FROM old_steps
GROUP BY model, model_version, site, structure, baseline_id, parameters;

INSERT INTO detector_history (result_id, fed_at, pairs, parameters, t, flags, vals)
SELECT s.result_id, min(s.fed_at), max(s.pairs),
       array_agg(p.id ORDER BY s.site, s.structure),
       array_agg(s.t ORDER BY s.site, s.structure),
       array_agg(s.flags ORDER BY s.site, s.structure),
       (SELECT array_agg(v ORDER BY n)
        FROM unnest(array_agg(s.vals ORDER BY s.site, s.structure)) WITH ORDINALITY AS f(v, n))
FROM old_steps s
JOIN detector_parameters p
  ON p.model = s.model AND p.model_version = s.model_version AND p.site = s.site
 AND p.structure = s.structure AND p.baseline_id = s.baseline_id AND p.parameters = s.parameters
GROUP BY s.result_id;

DROP TABLE old_steps;
DROP TABLE detector_updates;

-- As in PostgreSQL's 0013: the results retention reads idle cases oldest first.
CREATE INDEX cases_created ON cases (created_at);

-- The results retention deletes idle cases oldest first (Store::purge_expired_cases):
-- this index lets it read only the cases old enough, however long the history.
CREATE INDEX cases_created ON cases (created_at);

-- entente coordinator schema, version 3 (SQLite).
-- Keep in step with ../postgres/0003_participant_kind.sql.

-- Which kind of failure left a site's update out (`refused`, `over_budget`, `timed_out`,
-- `transport`, `malformed_reply`, `internal`). NULL for accepted updates and for rows
-- written by versions 1 and 2, which recorded only the reason.
ALTER TABLE participants ADD COLUMN kind TEXT;

-- Topic metadata cache and long-poll edge cases found in review.
\set VERBOSITY terse
SET synchronous_commit = on;

-- A topic created in a rolled-back transaction must not stay cached: the
-- name is free again and the real topic is used.
BEGIN;
SELECT estream.create_topic('phantom', 1);
SELECT * FROM estream.produce('phantom', '{"v": "rolled back"}');
ROLLBACK;
SELECT * FROM estream.produce('phantom', '{}');
SELECT estream.create_topic('phantom', 2);
SELECT * FROM estream.produce('phantom', '{"v": "real"}', partition => 1);
SELECT "offset", value FROM estream.fetch('phantom', 1, 0);
-- the same within one statement that fails after creating
SELECT estream.create_topic('phantom2', 1), estream.produce('phantom2', '{}'), 1 / 0;
SELECT estream.create_topic('phantom2', 3);
SELECT partition, stable_offset FROM estream.watermarks('phantom2') ORDER BY partition;

-- A call nested inside produce (a trigger on a segment) that changes a topic
-- and produces again must not free what the outer produce is using.
SELECT estream.create_topic('outer_t', 1);
SELECT estream.create_topic('inner_t', 1);
CREATE FUNCTION fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM estream.alter_topic('inner_t', '{"retention.ms": 1000}');
	PERFORM estream.produce('inner_t', jsonb_build_object('copy_of', NEW."offset"));
	RETURN NULL;
END $$;
DO $$
BEGIN
	EXECUTE format('CREATE TRIGGER fan_out AFTER INSERT ON %s FOR EACH ROW EXECUTE FUNCTION fan_out()',
				   (SELECT relid FROM estream.segment s JOIN estream.topic t USING (topic_id)
					WHERE t.name = 'outer_t'));
END $$;
SELECT * FROM estream.produce('outer_t', '{"n": 1}');
SELECT * FROM estream.produce('outer_t', '{"n": 2}');
SELECT * FROM estream.produce_batch('outer_t', ARRAY['{"n": 3}', '{"n": 4}']::jsonb[]);
SELECT "offset", value FROM estream.fetch('outer_t', 0, 0);
SELECT "offset", value FROM estream.fetch('inner_t', 0, 0);

-- A fetch never waits for its own transaction: the statement timeout would
-- fire if it did.
BEGIN;
SET LOCAL statement_timeout = '2s';
SELECT * FROM estream.produce('inner_t', '{"mine": true}');
SELECT count(*) FROM estream.fetch('inner_t', 0, 4, wait_ms => 60000);
COMMIT;
SELECT count(*) FROM estream.fetch('inner_t', 0, 4, wait_ms => 60000);

-- src/sql/triggers.sql: triggers on estream's tables, for a fresh install
-- (after the functions they call).  Not replayed by update scripts.

CREATE TRIGGER topic_invalidate
	AFTER INSERT OR UPDATE OR DELETE ON estream.topic
	FOR EACH ROW EXECUTE FUNCTION estream._topic_invalidate();
CREATE TRIGGER topic_invalidate_truncate
	AFTER TRUNCATE ON estream.topic
	FOR EACH STATEMENT EXECUTE FUNCTION estream._topic_invalidate();
COMMENT ON TRIGGER topic_invalidate ON estream.topic IS
	'Makes every backend drop its cached metadata of a topic that was created, changed or dropped.';
COMMENT ON TRIGGER topic_invalidate_truncate ON estream.topic IS
	'Makes every backend drop its cached topic metadata when estream.topic is truncated.';
-- also under session_replication_role = replica
ALTER TABLE estream.topic ENABLE ALWAYS TRIGGER topic_invalidate;
ALTER TABLE estream.topic ENABLE ALWAYS TRIGGER topic_invalidate_truncate;

-- The output plugin caches what is captured; a relcache invalidation of
-- estream.capture, replayed by decoding where the change committed, makes it
-- look again.
CREATE TRIGGER capture_invalidate
	AFTER INSERT OR UPDATE OR DELETE ON estream.capture
	FOR EACH ROW EXECUTE FUNCTION estream._topic_invalidate();
CREATE TRIGGER capture_invalidate_truncate
	AFTER TRUNCATE ON estream.capture
	FOR EACH STATEMENT EXECUTE FUNCTION estream._topic_invalidate();
ALTER TABLE estream.capture ENABLE ALWAYS TRIGGER capture_invalidate;
ALTER TABLE estream.capture ENABLE ALWAYS TRIGGER capture_invalidate_truncate;
COMMENT ON TRIGGER capture_invalidate ON estream.capture IS
	'Makes decoding sessions look again at what is captured when a capture is added, changed or removed.';
COMMENT ON TRIGGER capture_invalidate_truncate ON estream.capture IS
	'Makes decoding sessions look again at what is captured when estream.capture is truncated.';

CREATE TRIGGER acl_invalidate
	AFTER INSERT OR UPDATE OR DELETE ON estream.acl
	FOR EACH ROW EXECUTE FUNCTION estream._topic_invalidate();
CREATE TRIGGER acl_invalidate_truncate
	AFTER TRUNCATE ON estream.acl
	FOR EACH STATEMENT EXECUTE FUNCTION estream._topic_invalidate();
ALTER TABLE estream.acl ENABLE ALWAYS TRIGGER acl_invalidate;
ALTER TABLE estream.acl ENABLE ALWAYS TRIGGER acl_invalidate_truncate;
COMMENT ON TRIGGER acl_invalidate ON estream.acl IS
	'Makes every backend drop its cached rights when a right is granted or revoked.';
COMMENT ON TRIGGER acl_invalidate_truncate ON estream.acl IS
	'Makes every backend drop its cached rights when estream.acl is truncated.';

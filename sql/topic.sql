-- Topic administration: create, alter, add partitions, drop, and every
-- error path of bad names, bad partition counts and bad configuration.
\set VERBOSITY terse
SET synchronous_commit = on;

SELECT estream.create_topic('orders');
SELECT estream.create_topic('events.v1-raw_x', 4, '{"retention.ms": "3600000", "cleanup.policy": "compact,delete"}');
SELECT topic, partitions, config, segments FROM estream.topics ORDER BY topic;
SELECT effective_config FROM estream.topics WHERE topic = 'orders';

-- one row per partition, all empty
SELECT v.topic, v.partition, v.log_start_offset, v.stable_offset, v.next_offset, s.records, s.bytes
FROM estream.partitions v JOIN estream.partition_stats s USING (topic, partition)
ORDER BY topic, partition;

-- duplicates
SELECT estream.create_topic('orders');
SELECT estream.create_topic('orders', if_not_exists => true);

-- names: Kafka's rule
SELECT estream.create_topic('');
SELECT estream.create_topic('.');
SELECT estream.create_topic('..');
SELECT estream.create_topic('has space');
SELECT estream.create_topic('semi;colon');
SELECT estream.create_topic('ümlaut');
SELECT estream.create_topic(repeat('x', 250));
SELECT estream.create_topic(repeat('x', 249));
SELECT estream.create_topic(NULL);

-- partition counts
SELECT estream.create_topic('p0', 0);
SELECT estream.create_topic('pneg', -1);
SELECT estream.create_topic('pbig', 10001);
SELECT estream.create_topic('pnull', NULL);

-- configuration: unknown keys, bad values, bad shapes
SELECT estream.create_topic('c1', 1, '{"retention.msec": 1}');
SELECT estream.create_topic('c2', 1, '{"retention.ms": "soon"}');
SELECT estream.create_topic('c3', 1, '{"retention.ms": -2}');
SELECT estream.create_topic('c4', 1, '{"retention.ms": 1.5}');
SELECT estream.create_topic('c5', 1, '{"cleanup.policy": "forever"}');
SELECT estream.create_topic('c6', 1, '{"message.timestamp.type": "createtime"}');
SELECT estream.create_topic('c7', 1, '{"min.cleanable.dirty.ratio": 2}');
SELECT estream.create_topic('c8', 1, '{"segment.ms": 0}');
SELECT estream.create_topic('c9', 1, '{"max.message.bytes": 2000000000}');
SELECT estream.create_topic('c10', 1, '[1, 2]');
SELECT estream.create_topic('c11', 1, '{"retention.ms": {"a": 1}}');
SELECT estream.create_topic('c12', 1, NULL);
-- nothing of the failed calls is left behind
SELECT count(*) AS topics FROM estream.topic;
SELECT count(*) AS log_tables FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'estream' AND c.relname LIKE 'log\_%' AND c.relkind = 'p';

-- alter: merge, normalize numbers and policy order, null resets a key
SELECT estream.alter_topic('orders', '{"retention.ms": 60000, "cleanup.policy": "delete,compact"}');
SELECT estream.alter_topic('orders', '{"retention.ms": null}');
SELECT estream.alter_topic('orders', '{"nope": 1}');
SELECT estream.alter_topic('missing', '{}');
SELECT config FROM estream.topics WHERE topic = 'orders';

-- add partitions: total count, grow only
SELECT estream.add_partitions('orders', 3);
SELECT partitions FROM estream.topics WHERE topic = 'orders';
SELECT estream.add_partitions('orders', 3);
SELECT estream.add_partitions('orders', 2);
SELECT estream.add_partitions('missing', 5);
SELECT partition, stable_offset FROM estream.watermarks('orders') ORDER BY partition;

-- drop
SELECT estream.drop_topic('events.v1-raw_x');
SELECT estream.drop_topic('events.v1-raw_x');
SELECT estream.drop_topic('events.v1-raw_x', if_exists => true);
SELECT estream.drop_topic(repeat('x', 249));
SELECT topic FROM estream.topics ORDER BY topic;

-- a dropped and re-created topic starts again at offset 0
SELECT * FROM estream.produce('orders', '{"n": 1}', key => 'k', partition => 0);
SELECT estream.drop_topic('orders');
SELECT estream.create_topic('orders');
SELECT * FROM estream.produce('orders', '{"n": 2}');

-- sizes: the views' _relation_bytes() agrees with pg_total_relation_size()
-- (every fork, the indexes, the TOAST table and its index) without
-- building relation cache entries; null for what does not exist, 0 for
-- what has no storage
SELECT count(*) FROM estream.produce_batch('orders',
    ARRAY(SELECT jsonb_build_object('n', g, 'pad', repeat('x', 3000)) FROM generate_series(1, 50) g));
SELECT s.topic, s.size_bytes = pg_total_relation_size(s.relid) AS segment_agrees,
       t.size_bytes = (SELECT sum(pg_total_relation_size(x.relid)) FROM estream.segments x
                        WHERE x.topic = t.topic) AS topic_agrees,
       s.size_bytes > 8192 * 3 AS has_pages
FROM estream.segments s JOIN estream.topics t USING (topic) WHERE topic = 'orders';
CREATE UNLOGGED TABLE regress_sized (id int PRIMARY KEY, t text);
INSERT INTO regress_sized SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 300) g;
VACUUM regress_sized;
SELECT estream._relation_bytes('regress_sized') = pg_total_relation_size('regress_sized') AS unlogged_agrees,
       estream._relation_bytes('regress_sized_pkey') = pg_total_relation_size('regress_sized_pkey') AS index_agrees,
       estream._relation_bytes((SELECT log_relid FROM estream.topic WHERE name = 'orders')) AS partitioned,
       estream._relation_bytes(0) AS missing;
DROP TABLE regress_sized;

-- _partitions_created() tells the shared end cache that new partitions are
-- empty: it refuses partitions this transaction did not create (a wrong
-- end would break the stable-offset rule), and only the extension's owner
-- may call it
\set VERBOSITY terse
SELECT estream._partitions_created(topic_id, log_relid, 0, 0) FROM estream.topic WHERE name = 'orders';
SELECT estream._partitions_created(topic_id, log_relid, 0, 5) FROM estream.topic WHERE name = 'orders';
BEGIN;
SELECT estream.create_topic('fresh', 3);
SELECT estream._partitions_created(topic_id, log_relid, 0, 2) FROM estream.topic WHERE name = 'fresh';
SELECT * FROM estream.produce('fresh', '{"n": 1}', partition => 1);
COMMIT;
SELECT partition, stable_offset, next_offset FROM estream.partitions WHERE topic = 'fresh' ORDER BY 1;
CREATE ROLE regress_topic_nobody;
SET ROLE regress_topic_nobody;
SELECT estream._partitions_created(1, 0, 0, 0);
RESET ROLE;
DROP ROLE regress_topic_nobody;
SELECT estream.drop_topic('fresh');
\set VERBOSITY default

-- the configuration catalog is visible
SELECT name, default_value FROM estream.config_option ORDER BY name;

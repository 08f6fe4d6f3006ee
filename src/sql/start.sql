-- src/sql/start.sql: last in every script: start this database's worker
-- when the transaction commits.
SELECT estream._start_worker();

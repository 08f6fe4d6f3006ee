-- plpgsql_check over every PL/pgSQL function of schema estream (issue 13).
--
-- Every category of warning is on: other (unused variables, parameters
-- that overlap, casts), extra (shadowing, dead code, unmodified
-- variables, missing RETURN), performance (hidden casts, volatility),
-- security (SQL injection in EXECUTE) and compatibility.  A trigger
-- function is checked with each relation it fires on (estream has none in
-- PL/pgSQL today: its triggers call C).  The output is, in order:
--   1. findings that no rule of lint_allowed suppresses: must be none;
--      fix the function, or add a rule with the reason;
--   2. rules that suppress nothing any more: must be none (delete them);
--   3. what the rules suppress, so that a new suppressed finding shows in
--      the diff and is looked at;
--   4. functions that turn a category off with an in-comment option
--      (-- @plpgsql_check_options: ...), each with its reason next to it
--      in src/sql/.
-- plpgsql_check_function_tb() needs no shared_preload_libraries.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION plpgsql_check;
RESET client_min_messages;

CREATE TEMP TABLE lint_finding AS
SELECT p.oid::regprocedure::text AS fn, tg.tgrelid::regclass::text AS rel,
	   r.lineno, r.level, r.message, r.detail
  FROM pg_proc p
  JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
  LEFT JOIN pg_trigger tg ON tg.tgfoid = p.oid
 CROSS JOIN LATERAL plpgsql_check_function_tb(p.oid, coalesce(tg.tgrelid, 0),
		fatal_errors => false, other_warnings => true, extra_warnings => true,
		performance_warnings => true, security_warnings => true,
		compatibility_warnings => true) r
 WHERE p.pronamespace = 'estream'::regnamespace;

-- The rules: a finding is suppressed when its function and message match
-- (LIKE).  Each rule says why the finding is not a defect.
CREATE TEMP TABLE lint_allowed (rule text, fn text, message text);
INSERT INTO lint_allowed VALUES
-- "group" and "offset" are the names of arguments and result columns of
-- the public functions (estream.commit("group", ..., "offset"), latest()
-- returns "offset"), which callers use in named notation and SELECT lists:
-- renaming them changes the API.  Each _<name>_impl body takes the same
-- arguments as its public function by design (estream_gateway, src/acl.c).
-- Every use in the bodies is quoted.
('api names', 'estream.%', 'name of parameter "group" is reserved keyword'),
('api names', 'estream.%', 'name of parameter "offset" is reserved keyword'),
-- False positive: RETURN QUERY EXECUTE sets every column, which
-- plpgsql_check cannot see through dynamic SQL.  The SQL is dynamic
-- because the log table (estream.log_<topic id>) depends on the topic.
('dynamic result', 'estream._latest_rows(text)', 'OUT variable "%" is maybe unmodified'),
('dynamic result', 'estream._partition_stats_impl(integer)', 'OUT variable "%" is maybe unmodified'),
-- These read only, but are VOLATILE like the public functions whose
-- bodies they are (assignment(), committed(), latest(), latest_binary(),
-- the partitions view's statistics, grant_acl() and revoke_acl()).  STABLE
-- would change what they see: the snapshot of the calling statement
-- instead of a new one per statement under READ COMMITTED.  Issue 13
-- changes no behaviour; whether they should be STABLE is another change.
('volatility', 'estream._acl_args(text,text,text,text)', 'routine is marked as VOLATILE, should be STABLE'),
('volatility', 'estream._assignment_impl(text,text)', 'routine is marked as VOLATILE, should be STABLE'),
('volatility', 'estream._committed_impl(text,text)', 'routine is marked as VOLATILE, should be STABLE'),
('volatility', 'estream._latest_impl(text)', 'routine is marked as VOLATILE, should be STABLE'),
('volatility', 'estream._latest_binary_impl(text)', 'routine is marked as VOLATILE, should be STABLE'),
('volatility', 'estream._partition_stats_impl(integer)', 'routine is marked as VOLATILE, should be STABLE');

-- 1. findings to fix
SELECT f.fn, f.rel, f.lineno, f.level, f.message, f.detail
  FROM lint_finding f
 WHERE NOT EXISTS (SELECT 1 FROM lint_allowed a WHERE f.fn LIKE a.fn AND f.message LIKE a.message)
 ORDER BY f.fn COLLATE "C", f.rel COLLATE "C", f.lineno, f.message COLLATE "C";

-- 2. rules that suppress nothing
SELECT a.*
  FROM lint_allowed a
 WHERE NOT EXISTS (SELECT 1 FROM lint_finding f WHERE f.fn LIKE a.fn AND f.message LIKE a.message)
 ORDER BY a.rule COLLATE "C", a.fn COLLATE "C", a.message COLLATE "C";

-- 3. what the rules suppress
SELECT a.rule, f.fn, f.message
  FROM lint_finding f JOIN lint_allowed a ON f.fn LIKE a.fn AND f.message LIKE a.message
 ORDER BY a.rule COLLATE "C", f.fn COLLATE "C", f.message COLLATE "C";

-- 4. categories turned off in a function
SELECT p.oid::regprocedure AS fn,
	   substring(p.prosrc FROM '@plpgsql_check_options:[^\n]*') AS options
  FROM pg_proc p
 WHERE p.pronamespace = 'estream'::regnamespace AND p.prosrc LIKE '%@plpgsql_check_option%'
 ORDER BY p.oid::regprocedure::text COLLATE "C";

DROP EXTENSION plpgsql_check;

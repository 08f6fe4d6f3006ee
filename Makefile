# Makefile for estream (PGXS)

MODULE_big = estream
OBJS = \
	src/estream.o \
	src/schema.o \
	src/murmur2.o \
	src/shmem.o \
	src/topic.o \
	src/acl.o \
	src/produce.o \
	src/fetch.o \
	src/compact.o \
	src/worker.o \
	src/cdc_envelope.o \
	src/cdc_plugin.o \
	src/cdc_apply.o

EXTENSION = estream
# The released scripts are kept as they were; the current version's
# scripts are made from src/sql/ (see "Install scripts" below).
DATA = estream--1.0.sql estream--1.0--1.1.sql estream--1.1--1.2.sql estream--1.2--1.3.sql
DATA_built = estream--1.4.sql estream--1.3--1.4.sql
PGFILEDESC = "estream - event streams for PostgreSQL"

REGRESS = partitioner topic produce fetch limits cache groups maintenance idle_cost cdc cdc_isolation security lint reinstall
REGRESS_OPTS = --temp-instance=./tmp_check_regress --temp-config=./tmp_check_conf/estream.conf \
	--load-extension=estream

ISOLATION = visibility rollback savepoint prepare repeatable_read multi_partition topic_cache group_poll group_members group_member_races retention_inflight retention_order
ISOLATION_OPTS = --temp-instance=./tmp_check_iso --temp-config=./tmp_check_conf/estream.conf \
	--load-extension=estream

TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

EXTRA_CLEAN = tmp_check_conf tmp_check_regress tmp_check_iso output_iso results regression.diffs regression.out

# the test configuration, built below (before the include: pgxs.mk reads it)
REGRESS_PREP = tmp_check_conf/estream.conf

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# test/perl/EstreamNode.pm, the TAP tests' shared harness.  Added to
# PG_PROVE_FLAGS after the include (Makefile.global sets it, and resets
# PROVE_FLAGS, which stays free for flags such as PROVE_FLAGS=--verbose);
# prove runs in $(srcdir), so the path is relative to it.
PG_PROVE_FLAGS += -I ./test/perl

# The test configuration, plus output_plugin_libraries where the server has
# that setting (Debian's 15.19 and later): slots of plugin "estream" need it.
tmp_check_conf/estream.conf: test/estream.conf
	mkdir -p tmp_check_conf
	cp test/estream.conf $@
	if "$$($(PG_CONFIG) --bindir)/postgres" --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then \
		echo "output_plugin_libraries = 'pgoutput, test_decoding, estream'" >> $@; fi

# Install scripts.  Every function, view and grant of the current version
# lives in one file of src/sql/ named after its concern, written to be
# replayed (CREATE OR REPLACE); the catalog (tables, types) in
# src/sql/catalog.sql for a fresh install, and as ALTERs in
# src/sql/updates/<from>--<to>.sql for an update.  Both scripts replay the
# same concern files; test/t/021_fresh_vs_update.pl checks they give the
# same catalog.
SQL_CONCERNS = $(addprefix src/sql/,privileges.sql topics.sql records.sql groups.sql \
	maintenance.sql cdc.sql views.sql)

estream--1.4.sql: src/sql/catalog.sql $(SQL_CONCERNS) src/sql/triggers.sql src/sql/grants.sql src/sql/start.sql
	{ echo '/* $@: made by make from src/sql/; do not edit */'; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION estream" to load this file. \quit'; \
	  for f in $^; do printf '\n-- ---- %s\n\n' "$$f"; cat "$$f"; done; } > $@

estream--1.3--1.4.sql: src/sql/updates/1.3--1.4.sql $(SQL_CONCERNS) src/sql/updates/1.3--1.4.post.sql src/sql/grants.sql src/sql/start.sql
	{ echo '/* $@: made by make from src/sql/; do not edit */'; \
	  printf '%s\n' '\echo Use "ALTER EXTENSION estream UPDATE TO '"'"'1.4'"'"'" to load this file. \quit'; \
	  for f in $^; do printf '\n-- ---- %s\n\n' "$$f"; cat "$$f"; done; } > $@

# each object depends on the headers it includes (struct layouts); a
# subsystem's header includes the lower ones it needs (shmem.h: topic.h)
src/estream.o: src/estream.h src/acl.h src/cdc_plugin.h src/schema.h src/shmem.h src/topic.h src/worker.h
src/schema.o: src/schema.h
src/murmur2.o: src/murmur2.h
src/acl.o: src/acl.h src/schema.h
src/topic.o: src/acl.h src/schema.h src/topic.h
src/shmem.o: src/estream.h src/acl.h src/shmem.h src/topic.h
src/produce.o: src/estream.h src/acl.h src/murmur2.h src/schema.h src/shmem.h src/topic.h
src/fetch.o: src/estream.h src/acl.h src/shmem.h src/topic.h
src/compact.o: src/estream.h src/schema.h
src/cdc_envelope.o: src/cdc_envelope.h
src/cdc_plugin.o: src/cdc_envelope.h src/cdc_plugin.h
src/cdc_apply.o: src/estream.h src/cdc_apply.h src/cdc_envelope.h src/cdc_plugin.h src/schema.h
# every object may raise estream's SQLSTATEs (estream.h includes errcodes.h)
$(OBJS): src/errcodes.h
src/worker.o: src/estream.h src/acl.h src/cdc_apply.h src/schema.h src/shmem.h src/topic.h src/worker.h

# lay out the C sources as pgindent would (pg_bsd_indent); format-check
# changes nothing and fails on what is not laid out (the test command runs it)
.PHONY: format format-check
format:
	PG_CONFIG=$(PG_CONFIG) ./scripts/format.sh
format-check:
	PG_CONFIG=$(PG_CONFIG) ./scripts/format.sh --check

# the order of the C modules (docs/architecture.md) and the length of functions
.PHONY: check-modules
check-modules: all
	./scripts/check_modules.py

.PHONY: bench
bench:
	./scripts/bench.sh

# retention and compaction under steady load; SOAK_ARGS=--smoke for 20 s
.PHONY: soak
soak:
	./scripts/soak.sh $(SOAK_ARGS)

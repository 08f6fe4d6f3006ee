# Makefile for estream (PGXS)

MODULE_big = estream
OBJS = \
	src/estream.o \
	src/murmur2.o \
	src/shmem.o \
	src/topic.o \
	src/produce.o \
	src/fetch.o \
	src/compact.o \
	src/worker.o

EXTENSION = estream
DATA = estream--1.0.sql estream--1.0--1.1.sql estream--1.1--1.2.sql
PGFILEDESC = "estream - event streams for PostgreSQL"

REGRESS = partitioner topic produce fetch limits cache groups maintenance reinstall
REGRESS_OPTS = --temp-instance=./tmp_check_regress --temp-config=./test/estream.conf \
	--load-extension=estream

ISOLATION = visibility rollback savepoint prepare repeatable_read multi_partition topic_cache group_poll group_members group_member_races retention_inflight retention_order
ISOLATION_OPTS = --temp-instance=./tmp_check_iso --temp-config=./test/estream.conf \
	--load-extension=estream

TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

EXTRA_CLEAN = tmp_check_regress tmp_check_iso output_iso results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on the shared header (struct layouts)
$(OBJS): src/estream.h

.PHONY: bench
bench:
	./scripts/bench.sh

# retention and compaction under steady load; SOAK_ARGS=--smoke for 20 s
.PHONY: soak
soak:
	./scripts/soak.sh $(SOAK_ARGS)

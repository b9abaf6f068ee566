# recoverable_msg: PGXS build.  `make`, `make install`, and `test/check.sh`
# for the whole test suite (pg_regress, isolation specs and TAP clusters).

MODULE_big = recoverable_msg
# One folder per mechanism (src/*/README.md), recoverable_msg.c at the top.
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c src/*/*.c)))

EXTENSION = recoverable_msg
DATA = $(wildcard sql/recoverable_msg--*.sql)

# pg_regress inputs live in sql/, their outputs in expected/; the tests need
# the library preloaded, which test/check.sh arranges through --temp-config.
REGRESS = queue_basic queue_errors queue_delivery queue_wait queue_view dedup_tokens dedup_fanout \
          contract_caller contract_callee instance_basic instance_errors \
          worker_handlers queue_receipts queue_operations queue_idempotent queue_groups queue_priorities remote_queues security_roles security_input
REGRESS_OPTS = --load-extension=recoverable_msg

# Isolation specs for races, kept under test/ with their expected outputs.
ISOLATION = consumers_race get_rollback drop_vs_put ack_race collect_vs_put contract_race \
            deliver_vs_complete instance_receivers receipt_race grants_prepared locks_after_rights drop_role_race \
            dlq_vs_drop ready_hint pause_resume put_dedup_race groups_race \
            purge_vs_group_put pause_vs_long_poll group_order_dedup
ISOLATION_OPTS = --inputdir=test

TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src -I$(libpq_srcdir)
# remote/connection.c: the worker connects to foreign servers with libpq
SHLIB_LINK_INTERNAL = $(libpq)
# The compiler writes down which headers each object read (src/*/*.d), so
# that a change to a folder's header rebuilds only the files that use it:
# PGXS tracks no header dependencies by itself.
PG_CFLAGS = -MMD -MP
EXTRA_CLEAN = $(OBJS:.o=.d)
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

-include $(OBJS:.o=.d)

# test/check.sh reads the lists above through this, so they are stated once.
print-%:
	@echo '$($*)'

# Makefile - build, test and run ami-bus.
#
#   make            install missing Debian packages (make deps), build bin/
#   make test       ... and run every test; ends with "N passed, M failed"
#   make demo       ... and run the default topology under supervisord
#   make fuzz       run the coverage-guided decoder fuzzers (FUZZ_SECONDS=60)
#   make bench      the standard load scenarios, into docs/BENCHMARKS.md
#                   (BENCH_SECONDS=60 each; not part of make test)
#   make SANITIZE=1 test   the same suite built with ASan + UBSan
#   make install PREFIX=/usr/local DESTDIR=
#
# Layout of the build: common/*.c -> libami.a; services/<role>/ -> bin/ami-<role>
# (main.c is the thin main, every other .c is the role's actor and goes into
# libami-<role>.a so tests can run the actor in-process); tools/<name>/ ->
# bin/<name>; tests/unit/test_*.c -> one cmocka binary each.

SHELL       := /bin/sh
PREFIX      ?= /usr/local
DESTDIR     ?=
SANITIZE    ?= 0
FUZZ_SECONDS ?= 60
BENCH_SECONDS ?= 60
CC          ?= cc
FUZZ_CC     ?= clang

PKGS        := libczmq libzmq libsodium lmdb msgpack

ifeq ($(SANITIZE),1)
OUT         := build/san
BINDIR      := build/san/bin
SANFLAGS    := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else
OUT         := build/rel
BINDIR      := bin
SANFLAGS    :=
endif

# pkg-config runs once, lazily: after `deps` has installed the .pc files,
# not when make parses this file on a machine that has none yet.
PKG_CFLAGS  = $(eval PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS    = $(eval PKG_LIBS := $(shell pkg-config --libs $(PKGS)))$(PKG_LIBS)
TEST_LIBS   = $(eval TEST_LIBS := $(shell pkg-config --libs cmocka))$(TEST_LIBS)

WARN        := -Wall -Wextra -Werror
CFLAGS      := -std=c11 $(WARN) -O2 -g -D_GNU_SOURCE $(SANFLAGS)
LDFLAGS     := $(SANFLAGS)

COMMON_SRC  := $(wildcard common/*.c)
COMMON_OBJ  := $(COMMON_SRC:%.c=$(OUT)/%.o)
LIBAMI      := $(OUT)/libami.a

ROLES       := $(notdir $(patsubst %/,%,$(wildcard services/*/)))
# a tool is a directory of C sources; script-only tools (security-report) are run in place
TOOLS       := $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard tools/*/*.c)))))
# Tests and tools include role headers (each is named ami_<role>*.h).
CPPFLAGS    := -Icommon $(ROLES:%=-Iservices/%) -MMD -MP
ROLE_LIBS   := $(foreach r,$(ROLES),$(if $(filter-out services/$(r)/main.c,$(wildcard services/$(r)/*.c)),$(OUT)/libami-$(r).a))
SERVICE_BINS := $(patsubst services/%/main.c,$(BINDIR)/ami-%,$(wildcard services/*/main.c))
TOOL_BINS   := $(TOOLS:%=$(BINDIR)/%)
PROGRAMS    := $(SERVICE_BINS) $(TOOL_BINS)

TEST_SRC    := $(wildcard tests/unit/test_*.c)
TEST_BINS   := $(TEST_SRC:tests/unit/%.c=$(OUT)/tests/%)
TEST_HELPERS := $(filter-out $(TEST_SRC),$(wildcard tests/unit/*.c))
TEST_HELPER_OBJ := $(TEST_HELPERS:%.c=$(OUT)/%.o)

FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS   := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_FLAGS  := -std=c11 -O1 -g -D_GNU_SOURCE -Icommon -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

.PHONY: all deps test check fuzz fuzz-build memcheck demo stop cluster cluster-stop bench install clean distclean security-report test-faults
.DEFAULT_GOAL := all
# Keep intermediate objects (test and tool .o files) so a rebuild is incremental.
.SECONDARY:

all: $(PROGRAMS) $(TEST_BINS)

deps:
	@sh mk/deps.sh

# Every compiled object waits for deps (order-only: deps is phony and cheap).
$(OUT)/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(LIBAMI): $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

# libami-<role>.a: the role's actor (everything in services/<role>/ but main.c)
define ROLE_RULES
$(OUT)/libami-$(1).a: $$(patsubst %.c,$(OUT)/%.o,$$(filter-out services/$(1)/main.c,$$(wildcard services/$(1)/*.c)))
	@rm -f $$@
	ar rcs $$@ $$^

$(BINDIR)/ami-$(1): $(OUT)/services/$(1)/main.o $$(filter $(OUT)/libami-$(1).a,$(ROLE_LIBS)) $(LIBAMI)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) $$^ $$(PKG_LIBS) -lm -o $$@
endef
$(foreach r,$(ROLES),$(eval $(call ROLE_RULES,$(r))))

define TOOL_RULES
$(BINDIR)/$(1): $$(patsubst %.c,$(OUT)/%.o,$$(wildcard tools/$(1)/*.c)) $(ROLE_LIBS) $(LIBAMI)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) $$^ $$(PKG_LIBS) -lm -o $$@
endef
$(foreach t,$(TOOLS),$(eval $(call TOOL_RULES,$(t))))

$(OUT)/tests/%: $(OUT)/tests/unit/%.o $(TEST_HELPER_OBJ) $(ROLE_LIBS) $(LIBAMI)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(TEST_LIBS) $(PKG_LIBS) -lm -o $@

# The fuzzers compile the library and actor sources themselves so that the
# code under test carries libFuzzer's coverage instrumentation.
ROLE_SRC    := $(filter-out services/%/main.c,$(wildcard services/*/*.c))
build/fuzz/%: tests/fuzz/%.c $(COMMON_SRC) $(ROLE_SRC) $(wildcard common/*.h services/*/*.h) | deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(ROLES:%=-Iservices/%) $(PKG_CFLAGS) $< $(COMMON_SRC) $(ROLE_SRC) $(PKG_LIBS) -lm -o $@

# mkcorpus writes one valid encoding of every message (and a few edge cases)
# with the real encoder, so the seed corpus can never drift from the codec.
$(OUT)/fuzz/mkcorpus: $(OUT)/tests/fuzz/mkcorpus.o $(LIBAMI)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -lm -o $@

fuzz-build: $(FUZZ_BINS) $(OUT)/fuzz/mkcorpus

# Bounded fuzzing session: FUZZ_SECONDS per target, seed corpus generated by
# the codec's own encoder, crashes written to build/fuzz/crash-*.
fuzz: fuzz-build
	@sh tests/fuzz/run.sh --seconds $(FUZZ_SECONDS) --out $(OUT)

test: all fuzz-build
	@sh tests/run.sh --out $(OUT) --bin $(BINDIR)

check: test

# The fault suite of issue 6 (tests/faults/run.sh): a private multi-host
# cluster with interval data and on-demand reads flowing, one fault after
# the other (kill -9 of a head end, the MDMS, the broker, a fleet; the
# MDMS's disk full), a table of readings produced / stored / lost /
# duplicated, recovery time and failed reads per fault; fails on any loss,
# duplicate, missed recovery deadline or fault not built yet. Needs root.
# `make test` runs its short form (tests/integration/faults_short_test.sh).
test-faults: all
	@AMI_BIN=$(BINDIR) sh tests/faults/run.sh

# AMI-SEC traceability: each DESIGN.md §6 requirement with its tests and
# PASS/FAIL from the last `make test` logs; fails if any requirement has no
# passing test (docs/security/matrix.tsv is the mapping).
security-report:
	@sh tools/security-report/security-report.sh --matrix docs/security/matrix.tsv --logs $(OUT)/test-logs

# Every actor of every role, in one process, under valgrind: the whole-chain
# test with 1 s heartbeats (valgrind runs code ~30x slower). Fails on any
# memory error or definite/indirect leak.
memcheck: $(OUT)/tests/test_chain
	AMI_TEST_HEARTBEAT_MS=1000 valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
	    --error-exitcode=9 $(OUT)/tests/test_chain

# The standard load scenarios of issue 5 (ami-load baseline, ingest with
# 10 000 and 100 000 meters, on-demand reads at concurrency 1 and 64), each
# measured for BENCH_SECONDS, each in its own private deployment; writes
# docs/BENCHMARKS.md (machine, figures, ratios to the same run's baseline,
# targets met or missed). BENCH_SECONDS=5 is a quick smoke check. Not part
# of `make test`: the figures are measurements, not pass/fail.
bench: all
	@sh tools/ami-load/bench.sh --bin $(BINDIR) --seconds $(BENCH_SECONDS) --out docs/BENCHMARKS.md

demo: all
	@sh deploy/demo.sh start

stop:
	@sh deploy/demo.sh stop

# The default topology across hosts: deploy/cluster.topology's hosts as
# network namespaces on this machine (a bridge, a veth and an address
# each), one supervisord per host; needs root. cluster-stop removes every
# namespace and process of it (deploy/README.md).
cluster: all
	@sh deploy/cluster.sh up

cluster-stop:
	@sh deploy/cluster.sh down

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/ami-bus/deploy \
	    $(DESTDIR)$(PREFIX)/share/doc/ami-bus/proto
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	cp -R deploy/. $(DESTDIR)$(PREFIX)/share/ami-bus/deploy/
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/ami-bus/
	install -m 0644 proto/*.md $(DESTDIR)$(PREFIX)/share/doc/ami-bus/proto/
	cp -R docs/. $(DESTDIR)$(PREFIX)/share/doc/ami-bus/

clean:
	rm -rf build bin

distclean: clean
	rm -rf var

-include $(COMMON_OBJ:.o=.d) $(wildcard $(OUT)/services/*/*.d $(OUT)/tools/*/*.d $(OUT)/tests/unit/*.d)

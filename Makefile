# infergate: GNU make, pkg-config for every library.
#   make            build build/infergate and build/infergate-sim
#   make test       bootstrap, build, unit + integration tests
#   make run        bootstrap, build, start the demo (simulated model servers)
#   make asan       the whole test suite under AddressSanitizer + UBSan
#   make bench      benchmarks side by side with nginx and HAProxy
#   make storeload  build/bench/storeload, the budget store's load driver
#   make fuzz       libFuzzer targets (clang) into build/fuzz/, not run;
#                   tests/fuzz/fuzz_request.c and fuzz_config.c say how
#   make request-cost  instructions per request parse + edit, jansson path
#                   against the raw-byte one (callgrind counts, no timing)
#   make install    PREFIX (default /usr/local), SYSCONFDIR, DESTDIR honoured
#   make clean

PREFIX  ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
BUILD   ?= build
CC      ?= cc
VERSION := 0.1.0

PKGS    := libevent libevent_openssl libevent_pthreads openssl jansson hiredis yaml-0.1 \
           libcares
# llhttp has no library package in Debian: node-llhttp ships its generated
# C sources, compiled into libinfergate.a (see the llhttp rule below).
LLHTTP_SRC_DIR ?= /usr/share/llhttp
LLHTTP_INC     ?= /usr/share/include/llhttp
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wformat=2 -Wno-unused-parameter -Werror
OPT     ?= -O2 -g
SAN     ?=
CFLAGS_ALL  := -std=gnu11 $(OPT) $(SAN) $(WARN) -D_GNU_SOURCE \
               -DIG_VERSION='"$(VERSION)"' -Iinclude -I$(LLHTTP_INC) \
               $(PKG_CFLAGS) $(CFLAGS)
LDLIBS_ALL  := $(PKG_LIBS) -lpthread -lm $(LDLIBS)
LDFLAGS_ALL := $(SAN) $(LDFLAGS)

# Every .c under the three modules goes into the gateway; main.c holds main().
LIB_SRC  := $(sort $(filter-out gateway/main.c, \
              $(wildcard gateway/*.c admission/*.c routing/*.c)))
# llhttp's three generated files: -O2 always, without our warning set.
LLHTTP_OBJ := $(addprefix $(BUILD)/obj/llhttp/,llhttp.o api.o http.o)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(LLHTTP_OBJ)
MAIN_OBJ := $(BUILD)/obj/gateway/main.o
SIM_SRC  := $(sort $(wildcard tests/sim/*.c))
SIM_OBJ  := $(SIM_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# The jansson reference the request scanner's tests compare it with.
ORACLE_OBJ := $(BUILD)/obj/tests/unit/json_oracle.o \
              $(BUILD)/obj/tests/unit/request_json.o
DEPS     := $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(SIM_OBJ:.o=.d) \
            $(UNIT_SRC:tests/unit/%.c=$(BUILD)/obj/tests/unit/%.d) \
            $(ORACLE_OBJ:.o=.d)

# libFuzzer: the admission sources the target needs, built with clang.
FUZZ_CC  ?= clang
FUZZ_SAN ?= -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SRC := admission/json_scan.c admission/request.c \
            admission/request_edit.c admission/usage.c \
            tests/unit/request_json.c tests/unit/json_oracle.c

PYTEST  ?= /usr/bin/python3 -m pytest
PYTEST_ARGS ?=

.PHONY: all test unit integration run asan bench bench-check install clean bootstrap valgrind storeload fuzz request-cost
all: $(BUILD)/infergate $(BUILD)/infergate-sim

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/obj/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g $(SAN) -I$(LLHTTP_INC) -MMD -MP $(CFLAGS) -c $< -o $@

$(BUILD)/libinfergate.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/infergate: $(MAIN_OBJ) $(BUILD)/libinfergate.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

# The simulator still parses with http-parser (libhttp-parser-dev).
$(BUILD)/infergate-sim: $(SIM_OBJ)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL) -lhttp_parser

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libinfergate.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o,$^) $(filter %.a,$^) \
	    $(LDLIBS_ALL) -lcmocka

$(BUILD)/tests/test_request: $(ORACLE_OBJ)

$(BUILD)/fuzz/fuzz_request: tests/fuzz/fuzz_request.c $(FUZZ_SRC) \
    $(wildcard admission/*.h include/infergate/*.h tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu11 -O1 -g $(FUZZ_SAN) $(WARN) -D_GNU_SOURCE -Iinclude \
	    -Itests/unit $(filter %.c,$^) -o $@ -ljansson -lm

# The config loader alone: libyaml and every module's key tables.
FUZZ_CONFIG_SRC := gateway/config.c gateway/conf_yaml.c gateway/log.c \
                   admission/admission_conf.c admission/policy.c \
                   routing/routing_conf.c

$(BUILD)/fuzz/fuzz_config: tests/fuzz/fuzz_config.c $(FUZZ_CONFIG_SRC) \
    $(wildcard include/infergate/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu11 -O1 -g $(FUZZ_SAN) $(WARN) -D_GNU_SOURCE -Iinclude \
	    $(filter %.c,$^) -o $@ $(shell pkg-config --libs yaml-0.1) -lm

fuzz: $(BUILD)/fuzz/fuzz_request $(BUILD)/fuzz/fuzz_config

$(BUILD)/perf/request_cost: $(BUILD)/obj/tests/perf/request_cost.o \
    $(BUILD)/obj/tests/unit/request_json.o $(BUILD)/libinfergate.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

# Instructions inside path_old / path_new over 1000 requests, per request.
request-cost: $(BUILD)/perf/request_cost
	@for p in old new; do \
	    valgrind --tool=callgrind --toggle-collect=path_$$p \
	        --callgrind-out-file=$(BUILD)/perf/callgrind.$$p \
	        $(BUILD)/perf/request_cost $$p >/dev/null 2>&1 || exit 1; \
	    ir=$$(callgrind_annotate $(BUILD)/perf/callgrind.$$p 2>/dev/null | \
	        awk '/PROGRAM TOTALS/ { gsub(",", "", $$1); print $$1 }'); \
	    echo "$$p: $$((ir / 1000)) instructions per request"; \
	done

# The budget store under load (tests/bench/storeload.c); not part of make test.
storeload: $(BUILD)/bench/storeload
$(BUILD)/bench/storeload: $(BUILD)/obj/tests/bench/storeload.o $(BUILD)/libinfergate.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

bootstrap:
	@sh .ci/bootstrap

unit: all $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; (cd tests/unit && ../../$$t); done

integration: all
	IG_BUILD=$(abspath $(BUILD)) $(PYTEST) -q tests/integration $(PYTEST_ARGS)

# The benchmark harness itself works (make bench QUICK=1); no timing asserted.
bench-check: all
	IG_BUILD=$(abspath $(BUILD)) $(PYTEST) -q tests/bench/test_bench_quick.py

test: bootstrap
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) bench-check

# The build runs in a sub-make: on a fresh machine the packages bootstrap
# installs (pkg-config's flags, llhttp's sources) exist only after it.
run: bootstrap
	@$(MAKE) --no-print-directory all
	@sh tests/demo/run.sh $(abspath $(BUILD))

# The whole suite under AddressSanitizer + UBSan, in its own build tree.
asan: bootstrap
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" unit integration

# The integration suite with the gateway under valgrind memcheck.
valgrind: bootstrap
	$(MAKE) all
	IG_VALGRIND=1 IG_BUILD=$(abspath $(BUILD)) $(PYTEST) -q tests/integration $(PYTEST_ARGS)

bench: bootstrap
	-$(MAKE) all
	/usr/bin/python3 tests/bench/bench.py --build $(abspath $(BUILD)) $(if $(QUICK),--quick)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man8 \
	    $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(SYSCONFDIR)/infergate/tenants.d
	install -m 755 $(BUILD)/infergate $(DESTDIR)$(PREFIX)/bin/infergate
	install -m 755 $(BUILD)/infergate-sim $(DESTDIR)$(PREFIX)/bin/infergate-sim
	install -m 644 man/infergate.8 $(DESTDIR)$(PREFIX)/share/man/man8/infergate.8
	install -m 644 man/infergate.yaml.5 $(DESTDIR)$(PREFIX)/share/man/man5/infergate.yaml.5
	install -m 644 conf/infergate.yaml $(DESTDIR)$(SYSCONFDIR)/infergate/infergate.yaml
	install -m 644 conf/tenants.d/example.yaml $(DESTDIR)$(SYSCONFDIR)/infergate/tenants.d/example.yaml

clean:
	rm -rf build

-include $(DEPS)

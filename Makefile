# pullsecret — the only entry points: build, test, demo, bench, install.
LUA        ?= lua5.4
BUSTED     ?= $(LUA) /usr/bin/busted
PKG_CONFIG ?= pkg-config
CC         ?= cc
CFLAGS     ?= -O2 -g
WARNINGS    = -std=c99 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
LUA_CFLAGS  = $(shell $(PKG_CONFIG) --cflags lua5.4 2>/dev/null)
CURL_CFLAGS = $(shell $(PKG_CONFIG) --cflags libcurl 2>/dev/null)
CURL_LIBS   = $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null)
SANITIZE   ?=

SRCS = $(wildcard csrc/*.c)
HDRS = $(wildcard csrc/*.h)
CORE = build/pullsecret/core.so

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH := $(CURDIR)/build/?.so;;

.PHONY: all deps test spec lint demo bench install clean

all: $(CORE)

$(CORE): $(SRCS) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(WARNINGS) $(CFLAGS) $(SANITIZE) -fPIC -D_DEFAULT_SOURCE $(LUA_CFLAGS) $(CURL_CFLAGS) \
	  -shared -o $@ $(SRCS) $(CURL_LIBS)

deps:
	@sh .ci/deps

# Set-up included: missing Debian packages, then the build, then every spec.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory spec

spec: $(CORE)
	@mkdir -p build
	$(BUSTED) -o TAP spec | tee build/spec.tap; \
	  test "$$(grep -c '^not ok' build/spec.tap)" = 0 && grep -q '^ok' build/spec.tap

lint: deps
	luacheck -q lua spec bin bench

demo: deps
	@$(MAKE) --no-print-directory all
	$(LUA) bin/pullsecret-demo

bench: deps
	@$(MAKE) --no-print-directory all
	$(LUA) bench/run.lua

install: deps
	luarocks --lua-version=5.4 make --deps-mode=none rockspec/pullsecret-scm-1.rockspec

clean:
	rm -rf build

# SmartStashDB build.
#
#   make            library, stashfs, tools (optimised, with debug info)
#   make test       everything above, then every test, plain and under
#                   AddressSanitizer + UndefinedBehaviorSanitizer
#   make run        mount a demo store kept in ./data at ./mnt (foreground)
#   make clean
#
# Missing Debian packages are installed with apt-get when run as root;
# otherwise the build stops with one line naming them.

CC       ?= cc
BUILD    := build
DEPS_PKG := libfuse3-dev fuse3 libzstd-dev libcmocka-dev libyaml-dev pkg-config libleveldb-dev attr rsync

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
BASEFLAGS = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread -fPIC $(WARN) \
            -Ikv -Iwal -Isstable
CFLAGS   ?= -O2 -g
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
TSANFLAGS := -O1 -g -fsanitize=thread

PKGS     := libzstd yaml-0.1
LIBS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread
TESTLIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

LIB_SRC  := $(sort $(wildcard kv/*.c wal/*.c sstable/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
ASAN_OBJ := $(LIB_SRC:%.c=$(BUILD)/asan/%.o)
TSAN_OBJ := $(LIB_SRC:%.c=$(BUILD)/tsan/%.o)
HDRS     := $(wildcard kv/*.h wal/*.h sstable/*.h)

TEST_SRC := $(sort $(wildcard tests/test_*.c))
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/%)
ASAN_TESTS := $(TEST_SRC:tests/%.c=$(BUILD)/asan/%)
# The tests with many threads (and the background thread), also under ThreadSanitizer.
TSAN_TESTS := $(BUILD)/tsan/test_db $(BUILD)/tsan/test_memtable $(BUILD)/tsan/test_sstable $(BUILD)/tsan/test_file

TOOLS    := $(patsubst tools/%.c,$(BUILD)/%,$(wildcard tools/*.c))

PREFIX   ?= /usr/local
DESTDIR  ?=
LIBDIR   := $(PREFIX)/lib
INCDIR   := $(PREFIX)/include
BINDIR   := $(PREFIX)/bin
MANDIR   := $(PREFIX)/share/man
DATADIR  := $(PREFIX)/share/smartstash
VERSION  := 0.1.0

.PHONY: all deps test run clean install uninstall FORCE
all: deps $(BUILD)/libsmartstash.a $(BUILD)/libsmartstash.so $(TOOLS) $(BUILD)/stashfs

# One pkg-config probe per run; installs what is missing.
deps:
	@missing=""; \
	for p in fuse3 libzstd yaml-0.1 cmocka; do \
	  pkg-config --exists $$p 2>/dev/null || missing=1; \
	done; \
	for c in fusermount3 setfattr rsync; do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	[ -f /usr/include/leveldb/c.h ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing build dependencies: $(DEPS_PKG)"; \
	    (apt-get install -y -qq $(DEPS_PKG) >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(DEPS_PKG) >/dev/null)) || \
	     { echo "could not install: $(DEPS_PKG)"; exit 1; }; \
	  else \
	    echo "missing packages (install as root): apt-get install $(DEPS_PKG)"; exit 1; \
	  fi; \
	fi

$(BUILD)/obj/%.o: %.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -c $< -o $@

$(BUILD)/asan/%.o: %.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(SANFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -c $< -o $@

$(BUILD)/tsan/%.o: %.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(TSANFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -c $< -o $@

$(BUILD)/libsmartstash.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libsmartstash.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libsmartstash.so.0 -o $@ $^ $(LIBS)

# Written at every install: it names the PREFIX of that install.
$(BUILD)/smartstash.pc: FORCE
	@mkdir -p $(BUILD)
	@printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' '' \
	  'Name: smartstash' 'Description: SmartStashDB embedded LSM-tree key-value store' \
	  'Version: $(VERSION)' 'Requires.private: libzstd yaml-0.1' \
	  'Libs: -L$${libdir} -lsmartstash' 'Libs.private: -lpthread' 'Cflags: -I$${includedir}' > $@

# Programs, library (shared with its soname, and static), header,
# pkg-config file, man pages, the systemd unit example.
install: all $(BUILD)/smartstash.pc
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR) $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(DATADIR)
	install -m 0755 $(BUILD)/stashfs $(BUILD)/stashctl $(DESTDIR)$(BINDIR)/
	install -m 0644 man/stashfs.1 man/stashctl.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/smartstash.3 $(DESTDIR)$(MANDIR)/man3/
	install -m 0644 contrib/stashfs@.service $(DESTDIR)$(DATADIR)/
	install -m 0644 $(BUILD)/libsmartstash.a $(DESTDIR)$(LIBDIR)/libsmartstash.a
	install -m 0755 $(BUILD)/libsmartstash.so $(DESTDIR)$(LIBDIR)/libsmartstash.so.$(VERSION)
	ln -sf libsmartstash.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libsmartstash.so.0
	ln -sf libsmartstash.so.0 $(DESTDIR)$(LIBDIR)/libsmartstash.so
	install -m 0644 kv/smartstash.h $(DESTDIR)$(INCDIR)/smartstash.h
	install -m 0644 $(BUILD)/smartstash.pc $(DESTDIR)$(LIBDIR)/pkgconfig/smartstash.pc

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/stashfs $(DESTDIR)$(BINDIR)/stashctl \
	  $(DESTDIR)$(MANDIR)/man1/stashfs.1 $(DESTDIR)$(MANDIR)/man1/stashctl.1 \
	  $(DESTDIR)$(MANDIR)/man3/smartstash.3 $(DESTDIR)$(DATADIR)/stashfs@.service \
	  $(DESTDIR)$(LIBDIR)/libsmartstash.a $(DESTDIR)$(LIBDIR)/libsmartstash.so \
	  $(DESTDIR)$(LIBDIR)/libsmartstash.so.0 $(DESTDIR)$(LIBDIR)/libsmartstash.so.$(VERSION) \
	  $(DESTDIR)$(INCDIR)/smartstash.h $(DESTDIR)$(LIBDIR)/pkgconfig/smartstash.pc
	-rmdir $(DESTDIR)$(DATADIR) 2>/dev/null

$(BUILD)/asan/libsmartstash.a: $(ASAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

# test_faults makes the library's fsyncs fail on demand: they go through it.
WRAP_faults := -Wl,--wrap=fsync,--wrap=fdatasync,--wrap=write,--wrap=pwrite,--wrap=pwritev,--wrap=pwrite64,--wrap=pwritev64

$(BUILD)/test_%: tests/test_%.c tests/testutil.h $(BUILD)/libsmartstash.a
	$(CC) $(BASEFLAGS) $(CFLAGS) -Itests $< -o $@ $(BUILD)/libsmartstash.a $(TESTLIBS) $(LIBS) $(WRAP_$*)

$(BUILD)/tsan/libsmartstash.a: $(TSAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/tsan/test_%: tests/test_%.c tests/testutil.h $(BUILD)/tsan/libsmartstash.a
	$(CC) $(BASEFLAGS) $(TSANFLAGS) -Itests $< -o $@ $(BUILD)/tsan/libsmartstash.a $(TESTLIBS) $(LIBS) $(WRAP_$*)

$(BUILD)/asan/test_%: tests/test_%.c tests/testutil.h $(BUILD)/asan/libsmartstash.a
	$(CC) $(BASEFLAGS) $(SANFLAGS) -Itests $< -o $@ $(BUILD)/asan/libsmartstash.a $(TESTLIBS) $(LIBS) $(WRAP_$*)

# The daemon's permission rules are tested on their own.
$(BUILD)/test_perm: tests/test_perm.c fs/perm.c fs/perm.h
	$(CC) $(BASEFLAGS) $(CFLAGS) -Itests -Ifs $< fs/perm.c -o $@ $(TESTLIBS)

$(BUILD)/asan/test_perm: tests/test_perm.c fs/perm.c fs/perm.h
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(SANFLAGS) -Itests -Ifs $< fs/perm.c -o $@ $(TESTLIBS)

# The benchmark alone links LevelDB, to measure both engines in one run.
$(BUILD)/stash-bench: tools/stash-bench.c $(BUILD)/libsmartstash.a
	$(CC) $(BASEFLAGS) $(CFLAGS) $< -o $@ $(BUILD)/libsmartstash.a $(LIBS) -lleveldb -lm

$(BUILD)/%: tools/%.c $(BUILD)/libsmartstash.a
	$(CC) $(BASEFLAGS) $(CFLAGS) $< -o $@ $(BUILD)/libsmartstash.a $(LIBS)

$(BUILD)/stashfs: fs/stashfs.c fs/loop.c fs/loop.h fs/perm.c fs/perm.h $(BUILD)/libsmartstash.a
	$(CC) $(BASEFLAGS) $(CFLAGS) $(shell pkg-config --cflags fuse3 2>/dev/null) fs/stashfs.c fs/loop.c fs/perm.c -o $@ \
	  $(BUILD)/libsmartstash.a $(shell pkg-config --libs fuse3 2>/dev/null) $(LIBS)

$(BUILD)/fs_errno: tests/fs_errno.c
	$(CC) $(BASEFLAGS) $(CFLAGS) $< -o $@

$(BUILD)/fs_perm: tests/fs_perm.c
	$(CC) $(BASEFLAGS) $(CFLAGS) $< -o $@

$(BUILD)/fs_fsx: tests/fs_fsx.c
	$(CC) $(BASEFLAGS) $(CFLAGS) $< -o $@

$(BUILD)/fs_model: tests/fs_model.c
	$(CC) $(BASEFLAGS) $(CFLAGS) $< -o $@

$(BUILD)/crashtest: tests/crashtest.c $(BUILD)/libsmartstash.a
	$(CC) $(BASEFLAGS) $(CFLAGS) $< -o $@ $(BUILD)/libsmartstash.a $(LIBS)

test: all $(TESTS) $(ASAN_TESTS) $(TSAN_TESTS) $(BUILD)/crashtest $(BUILD)/fs_errno $(BUILD)/fs_perm $(BUILD)/fs_fsx $(BUILD)/fs_model
	@sh tests/run.sh $(BUILD)

run: all
	@sh tools/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD)

FORCE:

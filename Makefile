# Entry points of the README quick start. CMake does the real work.
BUILD ?= build
ASAN_BUILD ?= build-asan
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
JOBS ?= $(shell nproc)
C_SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find include lib cli tests -name '*.[ch]')

PREFIX ?= /usr/local

.PHONY: dist cross-check-windows clang-check package-test install all build bootstrap check test asan format format-check demo fuzz fuzz-smoke bench clean

all: build

bootstrap:
	@scripts/bootstrap

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: bootstrap $(BUILD)/build.ninja
	ninja -C $(BUILD)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# make install [PREFIX=/usr/local] [DESTDIR=/staging]: the prefix is set at
# configure time too, since hsmsign.pc records it.
install: bootstrap
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS) -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	ninja -C $(BUILD)
	DESTDIR=$(DESTDIR) cmake --install $(BUILD)

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DHSMSIGN_SANITIZE=ON \
		-DHSMSIGN_LAZY_LOAD=OFF

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer,
# with libcurl linked rather than loaded on first use (HSMSIGN_LAZY_LOAD=OFF):
# both ways are built and tested, and this one keeps curl's compile-time
# checks of curl_easy_setopt() arguments.
asan: bootstrap $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

format:
	clang-format -i $(C_SOURCES)

format-check:
	@clang-format --dry-run --Werror $(C_SOURCES) && echo "format-check: ok"

# libFuzzer harnesses: FUZZ_SECONDS per harness (make fuzz FUZZ_SECONDS=600).
FUZZ_SECONDS ?= 60
fuzz: bootstrap
	scripts/fuzz $(FUZZ_SECONDS)

# A short run of every harness, part of `make check`.
fuzz-smoke: bootstrap
	scripts/fuzz 15

# The whole tree (library, CLI, tests) with Clang, -std=c17 -pedantic, -Werror.
CLANG_BUILD ?= build-clang
clang-check:
	cmake -S . -B $(CLANG_BUILD) -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_C_FLAGS=-pedantic
	ninja -C $(CLANG_BUILD)

# The source tarball of HEAD, with its git revision in REVISION.
dist:
	scripts/dist .

# hsmsign.exe and libhsmsign.dll compiled and linked with MinGW-w64, against
# import libraries made from the dependencies' symbol tables (Debian has no
# Windows builds of them); nothing is run.
cross-check-windows:
	scripts/cross-check-windows

# Debian packages built twice (reproducible), lintian, installed binary signs.
package-test: bootstrap
	scripts/package-test

check: format-check clang-check cross-check-windows test asan fuzz-smoke package-test

# Benchmarks (docs/PERFORMANCE.md): large file, many files, startup.
bench: build
	HSMSIGN=$(CURDIR)/$(BUILD)/hsmsign bench/run-all

demo: build
	@scripts/demo $(BUILD)/hsmsign

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(CLANG_BUILD) build-fuzz demo-out

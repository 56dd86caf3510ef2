# Entry points of the README quick start. CMake does the real work.
BUILD ?= build
ASAN_BUILD ?= build-asan
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
JOBS ?= $(shell nproc)
C_SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find include lib cli tests -name '*.[ch]')

.PHONY: all build bootstrap check test asan format format-check demo fuzz fuzz-smoke bench clean

all: build

bootstrap:
	@scripts/bootstrap

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: bootstrap $(BUILD)/build.ninja
	ninja -C $(BUILD)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DHSMSIGN_SANITIZE=ON

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
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

check: format-check test asan fuzz-smoke

# Benchmarks (docs/PERFORMANCE.md): large file, many files, startup.
bench: build
	HSMSIGN=$(CURDIR)/$(BUILD)/hsmsign bench/run-all

demo: build
	@scripts/demo $(BUILD)/hsmsign

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz demo-out

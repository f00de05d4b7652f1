# edgellm: entry points for setting up a machine, fetching the test model, building, the demo and
# the full test run (what CI runs through .ci/run). `make help` lists the targets.
#
# The host build uses the Rust toolchain first on PATH (rustup). The aarch64 tests use Debian's
# rustc-web with its arm64 std and run under qemu-aarch64 (see tools/aarch64-test.sh and
# .cargo/config.toml); `make setup` installs all of it on Debian 12.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# Every target drives cargo or apt; running two at once only fights over locks and 2 cores.
.NOTPARALLEL:

CARGO ?= cargo
MODEL ?= models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
EDGELLM := target/release/edgellm
DEMO_PROMPT ?= What is the capital of France? Answer in one sentence.
# The demo: the default model answers a question, streamed, greedy.
DEMO_RUN ?= $(EDGELLM) run -m "$(MODEL)" --chat --temp 0 -n 96 -p "$(DEMO_PROMPT)"
# Crates whose tests also run on aarch64 under qemu, and the emulated CPUs: cortex-a72 (NEON
# without dotprod, Raspberry Pi 4) and cortex-a76 (NEON with dotprod, Raspberry Pi 5).
AARCH64_TEST_PACKAGES ?= -p edgellm-runtime -p edgellm-models
AARCH64_CPUS ?= cortex-a72 cortex-a76
# Tests that re-evaluate or re-quantize whole models take many minutes under qemu; what they
# rely on (kernels, quantizers) is tested there by kernels_vs_scalar and quant_vs_ggml.
AARCH64_TEST_ARGS ?= -- --skip four_beams_equal_a_naive_reference --skip kquant_files_equal_llama_quantize
# The same crates on 32-bit Raspberry Pi OS (armv7) under qemu-arm (cortex-a7: a Raspberry Pi 2),
# with the scalar kernels auto-vectorized for NEON (.cargo/config.toml), then `edgellm inspect`
# of a 5 GiB file (tools/armv7-test.sh). Scalar code under qemu-arm is several times slower than
# NEON under qemu-aarch64, so besides what aarch64 skips (or ignores on aarch64 only) this skips
# the tests that re-run whole-model work in loops over code that is the same on every target:
# the 48-token greedy runs of three formats (greedy_q4_1_short keeps a real-model greedy check,
# 16 tokens against llama.cpp), Q4_1 perplexity at 256 (hours), the two context-shift tests,
# the 66-token no-allocation decode, the two remaining beam-search tests (130 s), parses of
# the whole model at thousands of truncations (70 s) and byte flips (200 s; the parser is also
# fuzzed on the host) and the sampler no-allocation test over the whole vocabulary (80 s).
# The 32-bit parts (usize bounds in the GGUF parser, the map size limit) are tested by
# gguf_hostile's other tests, the runtime unit tests and the inspect check.
ARMV7_TEST_PACKAGES ?= $(AARCH64_TEST_PACKAGES)
ARMV7_CPUS ?= cortex-a7
ARMV7_TEST_ARGS ?= -- --skip four_beams_equal_a_naive_reference --skip kquant_files_equal_llama_quantize \
	--skip greedy_q4_1_matches_llama_cpp --skip greedy_q8_0_matches_llama_cpp \
	--skip greedy_f32_matches_llama_cpp --skip ppl_q4_1_c256 \
	--skip shifted_layer0_cache_matches_fresh_evaluation \
	--skip generation_shifts_instead_of_stopping_when_asked --skip decode_steps_allocate_nothing \
	--skip random_byte_flips_never_panic --skip sample_and_accept_do_not_allocate \
	--skip one_beam_is_greedy --skip beam_steps_allocate_nothing \
	--skip truncated_real_file_is_always_an_error

.PHONY: help setup model build demo test lint fmt-check clippy test-host test-aarch64 test-armv7 cross soak

help:
	@echo "make setup         install toolchains (aarch64 and armv7 cross, qemu, libclang, socat, Python test deps)"
	@echo "make model         fetch $(MODEL) (sha256-checked; no-op when present)"
	@echo "make build         cargo build --release"
	@echo "make demo          build, fetch the model if missing, run edgellm on it"
	@echo "make test          setup, model, fmt check, clippy, host tests, aarch64 and armv7 tests under qemu"
	@echo "make lint          fmt check and clippy only"
	@echo "make test-host     host x86_64 tests only"
	@echo "make test-aarch64  aarch64 tests only (AARCH64_CPUS='$(AARCH64_CPUS)')"
	@echo "make test-armv7    armv7 (32-bit Pi OS) tests and the inspect size check (ARMV7_CPUS='$(ARMV7_CPUS)')"
	@echo "make cross         stripped aarch64 release binary for a board (tools/cross-build.sh)"
	@echo "make soak          10-minute soak of edgellm serve (tools/soak.sh)"

# Installs with apt (through sudo when not root) only what dpkg-query says is missing.
setup:
	tools/setup-toolchains.sh

# SmolLM2 (the default model) and Gemma-3-270M (the gemma3 tests).
model:
	tools/fetch-model.sh all

build:
	$(CARGO) build --release

# Runs generation when the binary has `run`, else shows what the runtime knows about the model.
demo: build
	@[[ -f "$(MODEL)" ]] || tools/fetch-model.sh
	@if $(EDGELLM) run --help >/dev/null 2>&1; then \
		echo "== $(DEMO_RUN) =="; \
		$(DEMO_RUN); \
	else \
		echo "== $(EDGELLM) inspect $(MODEL) =="; \
		$(EDGELLM) inspect "$(MODEL)"; \
		echo; \
		echo "== $(EDGELLM) plan $(MODEL) =="; \
		$(EDGELLM) plan "$(MODEL)"; \
	fi

# --no-fail-fast: one CI log shows every failing test binary, not just the first.
test: setup model lint test-host test-aarch64 test-armv7

lint: fmt-check clippy

fmt-check:
	@echo "== cargo fmt --check =="
	$(CARGO) fmt --all -- --check

clippy:
	@echo "== cargo clippy =="
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-host:
	@echo "== host x86_64 tests =="
	@$(CARGO) --version
	$(CARGO) test --workspace --no-fail-fast

test-aarch64:
	tools/aarch64-test.sh --cpu "$(AARCH64_CPUS)" --no-fail-fast $(AARCH64_TEST_PACKAGES) $(AARCH64_TEST_ARGS)

test-armv7:
	tools/armv7-test.sh --skip-if-missing --cpu "$(ARMV7_CPUS)" --no-fail-fast $(ARMV7_TEST_PACKAGES) $(ARMV7_TEST_ARGS)

cross:
	tools/cross-build.sh

soak: build
	tools/soak.sh

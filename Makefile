# The two commands a new user needs (see README.md):
#   make run    set up, build, make the demo models, serve configs/demo.yaml
#   make test   set up, build, run every test through ctest
# Both install what they need (scripts/setup) and are idempotent.
#   make test SANITIZE=1   the same under AddressSanitizer + UBSan (build-asan/)
#   make test SANITIZE=thread   the same under ThreadSanitizer (build-tsan/)
#   make fuzz FUZZ_SECONDS=N    libFuzzer targets of tests/fuzz, N seconds each (build-fuzz/)

SANITIZE ?= 0
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 60
ifeq ($(SANITIZE),1)
BUILD ?= build-asan
CMAKE_FLAGS += -DLLMPOOL_SANITIZE=ON
else ifeq ($(SANITIZE),thread)
BUILD ?= build-tsan
CMAKE_FLAGS += -DLLMPOOL_SANITIZE=thread
# ctest sets TSAN_OPTIONS for the GoogleTest and replay tests; this covers
# the binaries the e2e tests start.
export TSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/tsan.supp:halt_on_error=1:second_deadlock_stack=1
else
BUILD ?= build
endif

BIN := $(BUILD)/llmpool
MODELS := models
DEMO_MODELS := $(MODELS)/tiny-q8_0.gguf $(MODELS)/small-q8_0.gguf $(MODELS)/coder-q8_0.gguf
# Stand-ins for the seed design's roles (configs/seed-roles.yaml): random
# weights, the shapes scaled down, a 64K training context (the engine's KV
# cache is unified: a model's sequences share context x parallel cells).
SEED_MODELS := $(MODELS)/seed-r1-q8_0.gguf $(MODELS)/seed-c1-q8_0.gguf $(MODELS)/seed-jv-q8_0.gguf
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: all setup build test test-unit fuzz run run-seed run-secure run-fabric models demo-models seed-models bench-models clean

all: build

setup:
	@scripts/setup

build: setup
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DLLAMA_CPP_DIR="$$(scripts/llama-cpp)" $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

# The fuzz build is its own (clang); the normal build's binary makes the
# chat_template target's model.
fuzz: build
	LLMPOOL_BIN=$(BIN) scripts/fuzz $(FUZZ_SECONDS)

# The trained demo pair (small = target, tiny = its draft): `llmpool train`
# on Debian's fortunes, cached in ~/.cache/llmpool/demo-models by recipe
# (scripts/demo-models). Always run: it only copies when the cache is warm,
# and it replaces older random-weight files of the same names.
demo-models: build
	@scripts/demo-models $(BIN) $(MODELS) >/dev/null

$(MODELS)/coder-q8_0.gguf: | build
	@mkdir -p $(MODELS)
	$(BIN) mkmodel --preset tiny --n-embd 128 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 384 \
	  --type q8_0 --seed 11 --out $@

# R1 (reasoning, 64K window): KV cache f16, 4 layers x 2 KV heads x 32 dims x 2 (K,V) x 2 B
# = 1 KiB per token: 64 MiB for 65536 tokens x 1 sequence.
$(MODELS)/seed-r1-q8_0.gguf: | build
	@mkdir -p $(MODELS)
	$(BIN) mkmodel --preset tiny --n-embd 256 --n-layer 4 --n-head 8 --n-head-kv 2 --n-ff 768 --ctx 65536 \
	  --type q8_0 --seed 101 --name seed-r1-standin --out $@

# C1 (coder, 24K window x 2): 1 KiB per token, 48 MiB for 2 x 24576 tokens.
$(MODELS)/seed-c1-q8_0.gguf: | build
	@mkdir -p $(MODELS)
	$(BIN) mkmodel --preset tiny --n-embd 192 --n-layer 4 --n-head 6 --n-head-kv 2 --n-ff 512 --ctx 65536 \
	  --type q8_0 --seed 102 --name seed-c1-standin --out $@

# J/V (judges and verifiers, 16K window x 3): tiny shape, 256 B per token, 12 MiB for 3 x 16384 tokens.
$(MODELS)/seed-jv-q8_0.gguf: | build
	@mkdir -p $(MODELS)
	$(BIN) mkmodel --preset tiny --ctx 65536 --type q8_0 --seed 103 --name seed-jv-standin --out $@

# The benchmarks' model: the shape of Qwen2.5-0.5B, q8_0, about 640 MiB.
$(MODELS)/bench-0.5b-q8_0.gguf: | build
	@mkdir -p $(MODELS)
	$(BIN) mkmodel --preset bench-0.5b --type q8_0 --out $@

models: build demo-models $(MODELS)/coder-q8_0.gguf

bench-models: build $(MODELS)/bench-0.5b-q8_0.gguf

seed-models: build $(SEED_MODELS)

run: models
	$(BIN) serve --config configs/demo.yaml --host $(HOST) --port $(PORT)

# The fabric (docs/fabric.md): nats-server -js, two workers, one API node.
NATS_PORT ?= 4222
run-fabric: models
	scripts/run-fabric $(BIN) $(BUILD) $(HOST) $(PORT) $(NATS_PORT)

run-seed: seed-models
	$(BIN) serve --config configs/seed-roles.yaml --host $(HOST) --port $(PORT)

# The secure demo (configs/secure-demo.yaml, README "Secure demo"): auth on,
# tenants acme and globex, the rate limits in a redis-server on loopback that
# starts with the server and stops with it. HS256 JWTs are signed with
# $$LLMPOOL_JWT_SECRET (at least 32 bytes).
REDIS_PORT ?= 6399
SECURE_DIR := .llmpool/secure-demo
run-secure: models
	@test -n "$$LLMPOOL_JWT_SECRET" || { echo 'run-secure: set LLMPOOL_JWT_SECRET first, e.g. export LLMPOOL_JWT_SECRET=$$(openssl rand -hex 32)'; exit 2; }
	@mkdir -p $(SECURE_DIR)
	@# Both run in the background and the shell waits: a signal to the shell
	@# alone (kill of its pid) still stops the server and redis.
	@redis-server --bind 127.0.0.1 --port $(REDIS_PORT) --save '' --appendonly no --dir $(SECURE_DIR) \
	  >$(SECURE_DIR)/redis.log 2>&1 & redis_pid=$$!; \
	  LLMPOOL_REDIS_URL=redis://127.0.0.1:$(REDIS_PORT) \
	  $(BIN) serve --config configs/secure-demo.yaml --host $(HOST) --port $(PORT) & serve_pid=$$!; \
	  trap 'kill $$serve_pid 2>/dev/null; wait $$serve_pid 2>/dev/null; kill $$redis_pid 2>/dev/null; wait $$redis_pid 2>/dev/null' EXIT; \
	  trap 'exit 130' INT; trap 'exit 143' TERM HUP; \
	  wait $$serve_pid

clean:
	rm -rf build build-asan build-tsan build-fuzz

# The two commands a new user needs (see README.md):
#   make run    set up, build, make the demo models, serve configs/demo.yaml
#   make test   set up, build, run every test through ctest
# Both install what they need (scripts/setup) and are idempotent.
#   make test SANITIZE=1   the same under AddressSanitizer + UBSan (build-asan/)

SANITIZE ?= 0
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
ifeq ($(SANITIZE),1)
BUILD ?= build-asan
CMAKE_FLAGS += -DLLMPOOL_SANITIZE=ON
else
BUILD ?= build
endif

BIN := $(BUILD)/llmpool
MODELS := models
DEMO_MODELS := $(MODELS)/tiny-q8_0.gguf $(MODELS)/small-q8_0.gguf
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: all setup build test test-unit run models clean

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

$(MODELS)/tiny-q8_0.gguf: | build
	@mkdir -p $(MODELS)
	$(BIN) mkmodel --preset tiny --type q8_0 --out $@

$(MODELS)/small-q8_0.gguf: | build
	@mkdir -p $(MODELS)
	$(BIN) mkmodel --preset tiny --n-embd 256 --n-layer 4 --n-head 8 --n-head-kv 4 --n-ff 768 \
	  --type q8_0 --seed 7 --out $@

models: build $(DEMO_MODELS)

run: models
	$(BIN) serve --config configs/demo.yaml --host $(HOST) --port $(PORT)

clean:
	rm -rf build build-asan

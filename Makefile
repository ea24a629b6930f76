# careloop — `make run` starts the service, `make test` runs every test. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-deps lint bench clean

install: $(STAMP)

# Reinstall only when the project's declared dependencies change: `make install` stays quick.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

run: install
	$(BIN)/careloop run

# What the tests need beyond Python packages: Debian's chromium for the browser tests and a
# running PostgreSQL (CI machines start it, but a restarted machine may not have).
test-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Debian's chromium"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "could not install chromium" >&2; exit 1; }; fi
	@# Fonts for the desk and chat screenshots (Chinese and emoji); the tests pass without them.
	@if ! fc-list 2>/dev/null | grep -qi "noto sans cjk"; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    fonts-noto-cjk fonts-noto-color-emoji >/dev/null) \
	  || echo "fonts-noto-cjk not installed: Chinese text in screenshots shows as boxes"; fi
	@if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
	  echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start || true; \
	  for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; fi

test: install test-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy bot monitors nlu storage desk config

bench: install
	$(BIN)/python -m bench.store

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The optional Rasa backend (`make rasa`, `make rasa-serve`) lives beside its config.
-include nlu/rasa/rasa.mk

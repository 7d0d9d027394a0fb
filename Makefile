# Two commands on a fresh machine:  make run  |  make test
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
UV      := $(BIN)/uv
PORT    ?= 8501
# who starts and stops the local endpoints (up/down need the role qa or admin in [roles] of tollgate.toml)
OPERATOR ?= admin@contoso.com
export TOLLGATE_WORKSPACE ?= local://.tollgate

.PHONY: run stop test seed bench browser-deps clean-workspace

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.8

# Re-install only when a requirements file changes.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(UV) pip install --quiet --python $(BIN)/python -r requirements-dev.txt
	touch $@

# Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; it never downloads a browser).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; }

seed: $(VENV)/.installed
	$(BIN)/python tollgate.py seed-demo

run: seed
	$(BIN)/python tollgate.py --as $(OPERATOR) up
	$(BIN)/python tollgate.py scheduler start
	@# the retraining scheduler runs with the console: stopped when the console stops (Ctrl-C) — docs/ci-cd.md
	trap '$(BIN)/python tollgate.py scheduler stop' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/python -m ui.serve --server.port $(PORT) --server.headless true

test: $(VENV)/.installed-dev browser-deps
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_pages.py
	$(BIN)/python bench/bench_telemetry.py
	$(BIN)/python bench/bench_azure_http.py

# The endpoints outlive the console (as Azure's do); this stops them.
stop: $(VENV)/.installed
	$(BIN)/python tollgate.py --as $(OPERATOR) down

clean-workspace: stop
	rm -rf .tollgate

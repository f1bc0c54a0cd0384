# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
SCRAPER_PORT ?= 8001

.PHONY: run test lint clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

## run: start the production server on 127.0.0.1:$(PORT) with a demo user and the demo scraper;
## sign-up is open in this demo (TELENTIR_SIGNUP=open) unless TELENTIR_SIGNUP says otherwise
run: $(BIN)/.installed
	$(BIN)/python -m telentir demo-scraper --port $(SCRAPER_PORT) & scraper=$$!; \
	trap 'kill $$scraper 2>/dev/null' EXIT INT TERM; \
	SCRAPER_HOSTNAME=$${SCRAPER_HOSTNAME:-http://127.0.0.1:$(SCRAPER_PORT)} \
	TELENTIR_SIGNUP=$${TELENTIR_SIGNUP:-open} \
	$(BIN)/python -m telentir serve --port $(PORT) --demo

## lint: ruff (lint and format check) and mypy; any finding fails
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test: the static checks, then the whole suite
test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache build *.egg-info

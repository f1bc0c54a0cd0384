# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
SCRAPER_PORT ?= 8001

.PHONY: run test lint lock clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

## run: the production server on 127.0.0.1:$(PORT) with a demo user, and the demo scraper on $(SCRAPER_PORT);
## sign-up is open in this demo (TELENTIR_SIGNUP=open) unless TELENTIR_SIGNUP says otherwise
# One supervisor (telentir/devrun.py) runs both: it refuses busy ports, and Ctrl-C, or SIGINT
# or SIGTERM sent to make alone, stops both and leaves no process behind.
run: $(BIN)/.installed
	TELENTIR_SIGNUP=$${TELENTIR_SIGNUP:-open} exec $(BIN)/python -m telentir.devrun --port $(PORT) --scraper-port $(SCRAPER_PORT)

## lint: ruff (lint and format check) and mypy; any finding fails
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test: the static checks, then the whole suite
test: lint
	$(BIN)/python -m pytest

## lock: pin every transitive runtime dependency, with hashes, for the Docker image (Linux, CPython 3.11)
lock: $(BIN)/.installed
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --quiet \
	  --output-file requirements.lock requirements.txt

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache build *.egg-info

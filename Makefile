# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
SCRAPER_PORT ?= 8001

.PHONY: run test test-fast test-deps lint lock clean

# The venv holds exactly what requirements-dev.lock pins (pip itself included), hashes checked:
# a clone installs next month what was tested today. `make lock` is the only way a pin moves.
$(BIN)/.installed: requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	touch $@

## run: the production server on 127.0.0.1:$(PORT) with a demo user, and the demo scraper on $(SCRAPER_PORT);
## sign-up is open in this demo (TELENTIR_SIGNUP=open) unless TELENTIR_SIGNUP says otherwise
# One supervisor (telentir/devrun.py) runs both: it refuses busy ports, and Ctrl-C, or SIGINT
# or SIGTERM sent to make alone, stops both and leaves no process behind.
run: $(BIN)/.installed
	TELENTIR_SIGNUP=$${TELENTIR_SIGNUP:-open} exec $(BIN)/python -m telentir.devrun --port $(PORT) --scraper-port $(SCRAPER_PORT)

## docs: regenerate docs/configuration.md from the settings' declaration (telentir/config/settings.py);
## tests/unit/test_configuration_doc.py fails until it is run after a setting changes
.PHONY: docs
docs: $(BIN)/.installed
	$(BIN)/python -m telentir.config.docs > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

## lint: ruff (lint and format check) and mypy (the server, then the Python client, strict); any finding fails
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd clients/python && $(CURDIR)/$(BIN)/mypy

## test: the static checks, then the whole suite (embedded), then its tests marked `scale_out` on PostgreSQL + S3 + Redis;
## nothing needs to be running: each pass starts a private Redis and PostgreSQL of its own (tests/private_services.py)
test: test-deps lint
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --backend postgres-s3-redis

## test-fast: the unit tests alone, in process (no server, no Redis, no PostgreSQL), in under a minute:
## tests/unit and the Python client's units; `make test` runs them too, with everything else
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit clients/python/tests/test_telentir_client_units.py

## test-deps: fail at once, saying what to install, if a program the suite starts is missing
## (redis-server; PostgreSQL's initdb and pg_ctl, found in /usr/lib/postgresql/<version>/bin); `bash .ci/run` installs them
test-deps: $(BIN)/.installed
	@$(BIN)/python -m tests.private_services --check

## lock: re-pin every package, with hashes (Linux, CPython 3.11): requirements.lock (runtime, the image installs it)
## from requirements.txt, then requirements-dev.lock (what `make test` installs) from requirements-dev.txt within it;
## existing pins are kept while they still fit, `make lock UPGRADE=1` moves every pin to the newest release
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --quiet $(if $(UPGRADE),--upgrade)
lock: $(BIN)/.installed
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --constraint requirements.lock --output-file requirements-dev.lock requirements-dev.txt

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache build *.egg-info

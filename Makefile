# The two commands a newcomer needs: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# ETSI's conformance suite: the checkout sits beside shared/ (e.g. /work/main and /work/shared).
CONFORMANCE_DIR ?= $(abspath $(CURDIR)/../shared/conformance)

.PHONY: install demo test lint format bench conformance clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/cidade demo

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

format: install
	$(BIN)/ruff check --fix src tests bench scripts
	$(BIN)/ruff format src tests bench scripts

test: install lint
	$(BIN)/python -m pytest -n auto -q --durations=25

# Both stores, every group of areas, each on a fresh store; fails below conformance/floor.txt.
# CONFORMANCE_ARGS=--raise-floor raises the floor to what passed; see scripts/conformance.py.
conformance: install
	CONFORMANCE_DIR=$(CONFORMANCE_DIR) $(BIN)/python scripts/conformance.py $(CONFORMANCE_ARGS)

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/notify.py
	$(BIN)/python bench/gate.py
	$(BIN)/python bench/mqtt_clients.py
	$(BIN)/python bench/devices.py
	$(BIN)/python bench/device_writes.py
	$(BIN)/python bench/devices_floor.py
	$(BIN)/python bench/micro.py
	$(BIN)/python bench/occurrences.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache

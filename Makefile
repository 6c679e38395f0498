# The two commands a newcomer needs: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	@printf 'cidade-demo-password\n' | $(BIN)/cidade user add demo --role admin --tenant '*' \
		--password-stdin --if-absent --store sqlite:///cidade.db
	@echo "Log in at http://127.0.0.1:8000/auth/login as demo / cidade-demo-password,"
	@echo "or make a key: .venv/bin/cidade key add --owner demo"
	$(BIN)/cidade serve --host 127.0.0.1 --port 8000 --store sqlite:///cidade.db

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

test: install lint
	$(BIN)/python -m pytest -n auto -q

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/notify.py
	$(BIN)/python bench/gate.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache

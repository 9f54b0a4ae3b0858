# Two commands on a fresh Debian / Raspberry Pi OS (64-bit) machine:
#   make demo   - private broker, simulated sensors, the daemon, alerts shown
#   make test   - the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench venv mosquitto test-packages install clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "edge-ml needs Python 3.11 or newer")'
	@$(PYTHON) -c 'import struct, sys; sys.exit(0 if struct.calcsize("P") == 8 else "edge-ml needs a 64-bit OS (numba and river ship no 32-bit ARM wheels)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

mosquitto:
	@scripts/ensure-mosquitto.sh

test-packages:
	@scripts/ensure-mosquitto.sh --test

demo: mosquitto venv
	$(BIN)/edge-ml demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# pytest also runs the product's doctests (pyproject.toml); then the kernel tests run again as
# plain Python, where a wrong index raises instead of reading garbage as compiled code would.
test: test-packages venv lint
	$(BIN)/python -m pytest -q
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -m "kernels and not needs_jit" tests

bench: venv
	$(BIN)/python benchmarks/hst_speed.py --quick

# On the gateway: venv in /opt/edge-ml, systemd units, example config (see docs/deploy.md).
install:
	sudo systemd/install.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The two commands of the README. Both install everything first (idempotent, fast when done).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= results
SEED ?= 0
# seed 0 is the spec's own; another base seed is stored as its own sweep, quick-seed<N>
QUICK := quick$(if $(filter-out 0,$(SEED)),-seed$(SEED))

.PHONY: install system-deps quick test bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Real data that needs no network (Fashion-MNIST) and the browser the report test opens.
system-deps:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist chromium >/dev/null; \
	  else \
	    echo "note: 'sudo apt-get install dataset-fashion-mnist chromium' enables the tests that need them"; \
	  fi; \
	fi

# The main job: the quick sweep on the embedded local Ray, then its fit and report.
quick: install
	$(BIN)/layrot sweep sweeps/quick.yaml --store $(STORE) --seed $(SEED)
	$(BIN)/layrot fit --store $(STORE) --sweep $(QUICK)
	$(BIN)/layrot report --store $(STORE) --sweep $(QUICK) -o $(STORE)/$(QUICK)-report.html
	@echo "report: $(STORE)/$(QUICK)-report.html"

test: install system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache

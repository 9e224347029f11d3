# lens_ros developer commands. `make demo` and `make test` set everything up first.
PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
STAMPS      := .stamps
# Sources whose change needs the interfaces / share/ files re-installed into the venv.
BUILD_INPUTS := CMakeLists.txt package.xml $(wildcard msg/*.msg srv/*.srv launch/*.py config/*.* config/*/*.yaml scripts/*) lens_ros/__init__.py

.PHONY: setup demo test test-fast lint format bench bench-full lock clean embedded-model help

help:
	@echo "make demo   - sim camera + node with the embedded model; overlays + report in demo_output/"
	@echo "make test   - the whole test suite (what CI runs)"
	@echo "make setup  - create .venv (pinned deps) and build the ROS interfaces into it"
	@echo "make lint   - ruff"
	@echo "make bench  - quick benchmarks (bench/results/); make bench-full for numbers"
	@echo "make embedded-model - retrain the embedded default model from scratch (CPU, ~2 h)"

setup: $(STAMPS)/deps $(STAMPS)/interfaces

$(STAMPS)/deps: requirements.txt requirements.lock
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "setuptools>=70" wheel
	$(PY) -m pip install -q -r requirements.txt -c requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/interfaces: $(STAMPS)/deps $(BUILD_INPUTS) tools/build_interfaces.sh
	bash tools/build_interfaces.sh $(VENV)
	@mkdir -p $(STAMPS) && touch $@

demo: setup
	$(VENV)/bin/lens-demo --out demo_output

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check lens_ros training test bench launch
	$(VENV)/bin/ruff format --check lens_ros training test bench launch

format: setup
	$(VENV)/bin/ruff format lens_ros training test bench launch

bench: setup
	$(PY) -m bench.run --quick

bench-full: setup
	$(PY) -m bench.run

embedded-model: setup
	$(PY) -m lens_training.tiny.build_embedded

# Re-resolve the pinned set (run after editing requirements.txt, then commit the lock).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^lens.ros' > requirements.lock

clean:
	rm -rf build $(STAMPS)

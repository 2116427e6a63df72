# The two set-up commands of README.md: `make serve` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test test-others conformance-taichi test-ref test-taichi-cpu test-taichi-vulkan test-taichi-vulkan-models test-taichi-vulkan-kernels test-browser system-libs browser conformance bench clean

# taichi links libX11; the Vulkan run needs the loader and Mesa's lavapipe (a software Vulkan device on the CPU)
SYSTEM_LIBS := mesa-vulkan-drivers libvulkan1 libx11-6
LDCONFIG := $(shell command -v ldconfig || echo /sbin/ldconfig)
LEGACY_OPENAI := $(VENV)/legacy-openai/bin/openai
PYTEST := HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(BIN)/python -m pytest -q

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-%: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$*]"
	touch $@

serve: $(VENV)/.installed-test
	$(BIN)/python -m ai00ref serve

# Taichi runs one arch per process: the taichi-marked tests run once per arch, each in its own pytest. The lavapipe
# run is the longest (mostly Taichi compiling kernels, once per process), so it starts first, in two processes, while
# everything else runs in turn beside them; the outputs are kept apart. Everything they need is installed before
# they start. The two lavapipe processes split the tests by file: the whole small models of the conformance and
# engine files (which compile the same layer kernels: one process compiles them once) and the rest. Two xdist
# workers taking tests as they freed up compiled many kernels in both, and took 14m41-16m59 of CI between runs
# (BENCHMARKS.md); xdist's loadgroup, which would keep files together, never took effect under pytest 9.
test: $(VENV)/.installed-test $(LEGACY_OPENAI) system-libs browser
	$(MAKE) --no-print-directory -j3 --output-sync=target test-taichi-vulkan test-others

test-others:
	$(MAKE) --no-print-directory test-ref test-browser test-taichi-cpu

test-ref: $(VENV)/.installed-test $(LEGACY_OPENAI)
	$(PYTEST) -m "not taichi and not browser"

# the web UI in Debian's headless Chromium, driven by playwright (from the [test] extra; it never downloads a browser)
test-browser: $(VENV)/.installed-test browser
	$(PYTEST) -m browser tests/test_browser.py

# the seed README's example uses openai 0.28's module API, which cannot share a venv with openai >= 1
$(LEGACY_OPENAI): | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/legacy-openai
	$(VENV)/legacy-openai/bin/python -m pip install -q openai==0.28.1

test-taichi-cpu: $(VENV)/.installed-test system-libs
	AI00REF_TAICHI_ARCH=cpu $(PYTEST) -p no:cacheprovider -m taichi

VULKAN_MODEL_FILES := tests/test_conformance_taichi.py tests/test_kernels_engine.py
test-taichi-vulkan: test-taichi-vulkan-models test-taichi-vulkan-kernels

test-taichi-vulkan-models: $(VENV)/.installed-test system-libs
	AI00REF_TAICHI_ARCH=vulkan $(PYTEST) -p no:cacheprovider -m taichi $(VULKAN_MODEL_FILES)

test-taichi-vulkan-kernels: $(VENV)/.installed-test system-libs
	AI00REF_TAICHI_ARCH=vulkan $(PYTEST) -p no:cacheprovider -m taichi $(addprefix --ignore=,$(VULKAN_MODEL_FILES))

# Debian packages, installed (as root) only when missing; without root it says what to install and goes on
# (the vulkan tests then fail under CI=true and skip elsewhere: tests/taichi_arch.py)
system-libs:
	@if $(LDCONFIG) -p | grep -q 'libvulkan\.so\.1 ' && $(LDCONFIG) -p | grep -q 'libX11\.so\.6 ' \
	    && ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(SYSTEM_LIBS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_LIBS) >/dev/null; \
	else echo "WARNING: missing Vulkan/X11 libraries: apt-get install $(SYSTEM_LIBS) (as root)" >&2; fi

# Debian's chromium for the browser tests, installed (as root) only when missing; without root it says so and goes
# on (the browser tests then fail under CI=true and skip elsewhere: tests/test_browser.py)
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "WARNING: no /usr/bin/chromium: apt-get install chromium (as root)" >&2; fi

conformance: $(VENV)/.installed-test
	$(BIN)/python -m conformance --backend ref

conformance-taichi: $(VENV)/.installed-test system-libs
	$(BIN)/python -m conformance --backend taichi --arch cpu
	$(BIN)/python -m conformance --backend taichi --arch cpu --precision fp16

bench: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/bench_*.py --benchmark-enable -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks

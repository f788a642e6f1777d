# picosparse: `make demo` (set up + main job) and `make test` (set up + tests) on a fresh machine.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
PADDLEDET := paddledet==2.6.0
# installed --no-deps: its metadata asks numpy>=1.24 (setup.cfg lists its real needs)
NNCF := nncf==3.4.0
# The one Paddle wheel: the CPU build by default; for CUDA: make install PADDLE=paddlepaddle-gpu==2.6.2
PADDLE ?= paddlepaddle==2.6.2
# Python 3.10: paddlelite (paddle_lite_opt) has x86-64 wheels only up to cp310.
PYTHON ?= $(shell for p in "$$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python3.10 \
                      /usr/bin/python3.10 /usr/local/bin/python3.10 "$$(command -v python3.10)"; do \
                    [ -x "$$p" ] && "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null \
                      && { echo "$$p"; break; }; done)
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint clean
.DEFAULT_GOAL := help

help:
	@echo "make demo       set up .venv (if needed) and run pipelines/demo.yml into runs/demo"
	@echo "make test       set up .venv (if needed) and run all tests (slow ones included)"
	@echo "make test-fast  tests without the slow end-to-end ones"
	@echo "make install    set up .venv only (idempotent; fast when nothing changed)"
	@echo "                PADDLE=paddlepaddle-gpu==2.6.2 installs the CUDA build instead"

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: Python 3.10 not found. Install it (e.g. 'pyenv install 3.10.13') or run" >&2; \
	  echo "       'make PYTHON=/path/to/python3.10 ...'. Why 3.10: paddlelite has no newer wheels." >&2; \
	  exit 1; fi
	"$(PYTHON)" -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-runs only when setup.cfg changes, the venv is new or PADDLE names another wheel.
$(STAMP): setup.cfg | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(PADDLEDET) $(NNCF)
	@# exactly one Paddle wheel: the other build would shadow it (both install `paddle`)
	if [ "$$(cat $(VENV)/.paddle 2>/dev/null)" != "$(PADDLE)" ]; then \
	  $(BIN)/python -m pip uninstall -q -y paddlepaddle paddlepaddle-gpu 2>/dev/null; \
	  $(BIN)/python -m pip install -q '$(PADDLE)' && echo '$(PADDLE)' > $(VENV)/.paddle; fi
	$(BIN)/picosparse env >/dev/null || { $(BIN)/picosparse env; exit 1; }
	touch $(STAMP)

# a PADDLE other than the installed one forces the install step
ifneq ($(shell cat $(VENV)/.paddle 2>/dev/null),$(PADDLE))
.PHONY: $(STAMP)
endif

install: $(STAMP)

demo: install
	$(BIN)/picosparse run pipelines/demo.yml --out runs/demo

# The x86 op tests (they build our library and load it into OpenVINO through bare Cores, the
# way OpenVINO's own tests do) run in a pytest process of their own, apart from the tests that
# train with Paddle's DataLoader: OpenVINO's CPU plugin can leave a thread on a freed signal
# stack (picosparse/deploy/sigstack.py keeps picosparse's own compiles safe from that).
X86_TESTS := tests/test_ops.py tests/test_bf16.py tests/test_x86_sparse_cli.py tests/test_op_build.py
NOT_X86 := $(foreach t,$(X86_TESTS),--ignore=$(t))

test: install
	$(BIN)/python -m pytest -q $(NOT_X86) $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q $(X86_TESTS) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(NOT_X86) $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -m "not slow" $(X86_TESTS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache

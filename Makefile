# Targets run as root on Debian 12.  `make test PYTEST_ARGS='-k infra -x'` passes arguments to pytest.
PYTEST_ARGS ?=
# `make bench BENCH_ARGS='--only admin'` runs only the vadduser/vuserinfo lines (see bench/run.py --help)
BENCH_ARGS ?=

.PHONY: test demo bench lint

test:
	bash scripts/test.sh $(PYTEST_ARGS)

demo:
	bash scripts/demo.sh

bench:
	.venv/bin/python -I bench/run.py $(BENCH_ARGS)

lint:
	.venv/bin/ruff check .

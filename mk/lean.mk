# Memory of the camex daemons (goal: <= 20 MiB resident each); see
# bench/README.md, profile items 8 and 9.
#   make bench-memory            VmHWM/VmRSS per daemon, anonymous vs file-backed by library
#   make bench-memory-imports    RSS step by step through a daemon's imports

.PHONY: bench-memory bench-memory-imports

bench-memory: venv deps bench-deps
	$(PY) -m bench.memory $(MEMORY_ARGS)

bench-memory-imports: venv
	$(PY) -m bench.memory --imports

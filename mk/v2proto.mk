# camex v2 Scapy layers and camex-dissect v2 (owner: v2-proto). Included by the top Makefile.
#
#   make vectors-v2   regenerate tests/vectors/v2.json from camex.testing.memlab.sample_traffic
#                     (needed when the sample conversation changes; the unit tests say so)
#
# The tests need no target here: tests/unit/test_proto_v2*.py and test_dissect_v2*.py run
# in `make test-unit`, tests/integration/test_dissect_v2_live.py in `make test-integration`.

.PHONY: vectors-v2

vectors-v2: venv
	$(PY) tests/vectors/gen_v2.py

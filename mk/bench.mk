# Benchmarks (owner: bench). `make bench` measures raw veth, camex and the
# peer tunnels side by side and writes bench/results/latest.{md,json,png}.
# Other areas add suites with BENCH_SUITES += their-target (e.g. bench-vm).
#   make bench BENCH_ARGS="--quick --only camex-relay-enc,wireguard-go"
#   make bench-list              names of the entries
#   make bench-load LOADGEN_ARGS="--clients 10000"
#   make bench-profile           py-spy of the camex relay under iperf3 load
#   make bench-peers             the newest wireguard-go of Debian sid/trixie, unpacked
#                                into ~/.cache/camex-bench (cached; BENCH_PEERS_ARGS=--refresh)

APT_BENCH := iperf3 iputils-ping openssl procps wireguard-go wireguard-tools openvpn fastd tinc \
	debian-archive-keyring
BENCH_ARGS ?=
LOADGEN_ARGS ?=
PROFILE_ARGS ?=
BENCH_PEERS_ARGS ?=

.PHONY: bench bench-net bench-deps bench-peers bench-list bench-load bench-profile

bench: bench-net $(BENCH_SUITES)

bench-deps:
	sh scripts/install-deps.sh $(APT_BENCH)

# Never fails: a peer it cannot fetch is a bench row saying why.
bench-peers: venv bench-deps
	$(PY) -m bench.fetch $(BENCH_PEERS_ARGS)

bench-net: venv deps bench-deps bench-peers
	$(PY) -m bench.run $(BENCH_ARGS)

bench-list: venv
	$(PY) -m bench.run --list

bench-load: venv deps
	$(PY) -m bench.load $(LOADGEN_ARGS)

bench-profile: venv deps
	$(PY) -m bench.profile $(PROFILE_ARGS)

# The harness and report checks (run by `make test`).
TEST_SUITES += bench-selftest
.PHONY: bench-selftest
bench-selftest: venv deps bench-deps
	$(PYTEST) -q -p no:cacheprovider bench/tests

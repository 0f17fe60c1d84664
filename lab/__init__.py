"""camex lab: network-namespace topologies (netns.py), the `make demo` driver
(demo.py) and helpers shared by the integration tests, the VM lab and the
benchmarks."""

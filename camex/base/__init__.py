"""Leaf helpers every layer may use: values, hashes, the replay window, logging,
forked helpers, the virtio-net header and pure packet work, the contract between
daemons and cores, the address policy. Imports nothing else of camex.
"""

"""Test tools: fakes of the system seams, the in-memory v2 network, the fuzzers.
Not used by the daemons.
"""

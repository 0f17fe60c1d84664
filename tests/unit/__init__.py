"""The unit tier: in memory or in a private namespace, no lab; plain `pytest` runs it."""

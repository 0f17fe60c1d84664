"""The namespace lab tier (marked `lab` by tests/conftest.py): real daemons, TUN and UDP."""

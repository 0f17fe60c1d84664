"""The VM tier (marked `lab` and `vm` by tests/conftest.py): camex.ko in virtme-ng guests."""

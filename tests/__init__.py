"""camex's tests. Each folder is a package so that module names are unique
(tests.unit.test_v2_bulk and tests.integration.test_v2_bulk can coexist)
and shared helpers import as tests.support.*."""

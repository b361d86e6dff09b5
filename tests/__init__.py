"""The test suite (a package, so `tests.helpers` wins over stray `tests` packages in site-packages)."""

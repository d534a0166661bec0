"""Per-op rebuild tests. A package, so this directory's conftest.py does not shadow tests/conftest.py
(conftest modules outside a package all share the module name `conftest`)."""

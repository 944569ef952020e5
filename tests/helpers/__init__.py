"""Shared test helpers (importable as ``helpers`` from tests: pytest puts
tests/ on sys.path because tests/ has no __init__.py)."""

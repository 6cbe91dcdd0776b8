"""Real services for the tests, started by fixtures and stopped by pid (see tests/conftest.py)."""

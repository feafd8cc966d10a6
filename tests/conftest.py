"""Shared pytest fixtures. Fixtures used by one test module live in that module."""

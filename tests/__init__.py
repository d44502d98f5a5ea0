"""Tests for mnist-lit; shared fixtures and helpers live in conftest.py."""

"""Factories and small tools shared by the test suites."""

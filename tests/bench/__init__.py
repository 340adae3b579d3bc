"""Benchmarks: they print figures; they are not tests (nothing here is collected by pytest)."""

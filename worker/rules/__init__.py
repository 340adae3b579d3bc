"""The decision core: pure functions of (facts, now). No Redis, no dramatiq, no clock reads."""

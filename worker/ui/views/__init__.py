"""What each page shows: pure functions of the records read and `now` (no I/O, no clock)."""

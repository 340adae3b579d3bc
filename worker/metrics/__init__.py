"""The estate's Prometheus metrics: what the store reads at scrape time (records.py), the pure
function turning it into metric families and the collector around it (estate.py)."""

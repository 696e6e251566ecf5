"""Looking at the box: host and GPU figures (GET /stats) and Prometheus metrics (GET /metrics)."""

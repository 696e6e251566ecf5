"""Model profiles: named recipes for launches that /v1 and batches load on demand."""

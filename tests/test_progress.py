"""Start-up progress read from vLLM's log as it grows (launches/progress.py)."""

from __future__ import annotations

from vllm_bootstrap.launches.progress import LoadProgress

# Lines as vLLM 0.32 prints them on a GPU, tqdm's bars rewriting themselves with \r.
LOG = (
    b"(APIServer pid=1) INFO 11-27 10:00:00 [api_server.py:1] vLLM API server version 0.32.0\n"
    b"(EngineCore_DP0 pid=2) INFO 11-27 10:00:05 [gpu_model_runner.py:5040] Starting to load "
    b"model Qwen/Qwen3-8B...\n"
    b"Loading safetensors checkpoint shards:   0% Completed | 0/4 [00:00<?, ?it/s]\r"
    b"Loading safetensors checkpoint shards:  25% Completed | 1/4 [00:01<00:03, 1.0it/s]\r"
    b"Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:02<00:02, 1.0it/s]\n"
)
LATER = (
    b"(EngineCore_DP0 pid=2) INFO [gpu_model_runner.py:5150] Model loading took 15.3 GiB "
    b"memory and 4.1 seconds\n"
    b"(EngineCore_DP0 pid=2) INFO [backends.py:1167] Dynamo bytecode transform time: 6.1 s\n"
    b"(EngineCore_DP0 pid=2) INFO [gpu_worker.py:218] Memory profiling takes 9.8 seconds.\n"
    b"Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|####5     | 30/67\r"
)


def test_phases_and_fractions_follow_the_log() -> None:
    progress = LoadProgress()
    assert (progress.phase, progress.progress) == ("starting", None)
    progress.feed(LOG)
    assert (progress.phase, progress.progress) == ("loading_weights", 0.5)
    progress.feed(LATER)
    # The bar's last update has no line end yet: it counts once the next byte arrives.
    progress.feed(b"Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  90%|####  | 60/67")
    assert (progress.phase, progress.progress) == ("capturing_graphs", 0.45)
    progress.feed(b"\r")
    assert progress.progress == 0.9
    progress.feed(b"\n(APIServer pid=1) INFO Starting vLLM server on http://0.0.0.0:8000\n")
    assert (progress.phase, progress.progress) == ("starting_server", None)


def test_a_line_cut_between_two_reads_is_still_read() -> None:
    progress = LoadProgress()
    for position in range(0, len(LOG), 7):
        progress.feed(LOG[position : position + 7])
    assert (progress.phase, progress.progress) == ("loading_weights", 0.5)


def test_the_phase_never_moves_back() -> None:
    progress = LoadProgress()
    progress.feed(b"Capturing CUDA graphs (decode, FULL): 10%|#  | 1/10\n")
    progress.feed(b"INFO Loading weights took 1.20 seconds\n")
    assert progress.phase == "capturing_graphs"


def test_an_endless_line_keeps_memory_bounded() -> None:
    progress = LoadProgress()
    for _ in range(1000):
        progress.feed(b"x" * 10_000)
    assert len(progress._carry) <= 4096

"""How far a loading vLLM has got, read from its log as the log grows.

vLLM says what it is doing at each step of its start-up; the readiness watcher hands every
new piece of the log here (never the whole file again), and `LoadProgress` keeps the phase
and, where vLLM prints a progress bar, the fraction done:

    downloading       (before vLLM starts) its Hub model's files are fetched, with the
                      fraction of bytes done (set by the launch, downloads/)
    starting          the process runs; nothing said yet
    loading_weights   "Starting to load model ...", "Loading safetensors checkpoint shards:
                      50% Completed | 1/2" (tqdm bars arrive as \\r-separated updates)
    compiling         torch.compile: "Dynamo bytecode transform time", "Compiling a graph"
    profiling         "Memory profiling takes ...", the KV cache being sized
    capturing_graphs  "Capturing CUDA graphs (...): 45%|..."
    starting_server   "init engine (profile, create kv cache, warmup model) took ...",
                      "Starting vLLM server on ..."
    ready             answered /health and listed its models (set by the launch itself)

A phase only moves forward: a late line of an earlier step does not move it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PHASES = (
    "downloading",
    "starting",
    "loading_weights",
    "compiling",
    "profiling",
    "capturing_graphs",
    "starting_server",
    "ready",
)
_MARKERS: tuple[tuple[bytes, str], ...] = (
    (b"Starting to load model", "loading_weights"),
    (b"Loading safetensors checkpoint shards", "loading_weights"),
    (b"Loading weights took", "loading_weights"),
    (b"Model loading took", "loading_weights"),
    (b"Dynamo bytecode transform time", "compiling"),
    (b"Compiling a graph", "compiling"),
    (b"torch.compile takes", "compiling"),
    (b"Memory profiling takes", "profiling"),
    (b"Capturing CUDA graphs", "capturing_graphs"),
    (b"Graph capturing finished", "capturing_graphs"),
    (b"init engine (profile, create kv cache, warmup model) took", "starting_server"),
    (b"Starting vLLM server on", "starting_server"),
)
# Phases whose lines carry a fraction: tqdm's "45%|" or vLLM's "50% Completed".
_BARS = {
    b"Loading safetensors checkpoint shards": "loading_weights",
    b"Capturing CUDA graphs": "capturing_graphs",
}
_PERCENT = re.compile(rb"(\d{1,3})%(?:\s*Completed|\|)")
# Longest marker, so a line cut between two reads is still recognised.
_CARRY_BYTES = 4096


@dataclass
class LoadProgress:
    phase: str = "starting"
    progress: float | None = None
    _carry: bytes = b""

    def feed(self, data: bytes) -> None:
        """Read the next piece of the log (any size, cut anywhere)."""
        text = self._carry + data
        pieces = re.split(rb"[\r\n]", text)
        self._carry = pieces.pop()[-_CARRY_BYTES:]  # unfinished: seen again with what follows
        for piece in pieces:
            self._read_line(piece)

    def _read_line(self, line: bytes) -> None:
        for marker, phase in _MARKERS:
            if marker in line:
                self._advance(phase)
                break
        for marker, phase in _BARS.items():
            if marker in line and (match := _PERCENT.search(line)) and phase == self.phase:
                self.progress = min(int(match.group(1)), 100) / 100

    def _advance(self, phase: str) -> None:
        if PHASES.index(phase) > PHASES.index(self.phase):
            self.phase, self.progress = phase, None

"""Log chunks never split a UTF-8 character; the crash explanation is the telling line."""

from __future__ import annotations

from pathlib import Path

from vllm_bootstrap.launches.logs import known_cause, last_error_line, read_chunk


def test_chunks_join_back_to_the_file(tmp_path: Path) -> None:
    text = "héllo wörld ✓ 😀 " * 50
    log = tmp_path / "x.log"
    log.write_text(text, encoding="utf-8")
    pieces, offset = [], 0
    while True:
        chunk = read_chunk(log, offset, limit=7)
        if chunk.next_offset == offset:
            break
        pieces.append(chunk.content)
        offset = chunk.next_offset
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_a_character_cut_by_the_limit_waits_for_the_next_call(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes("ab😀".encode())  # the emoji is 4 bytes: offsets 2..5
    first = read_chunk(log, 0, limit=4)
    assert (first.content, first.next_offset) == ("ab", 2)
    second = read_chunk(log, first.next_offset, limit=4)
    assert (second.content, second.next_offset) == ("😀", 6)


def test_a_half_written_character_is_held_back(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"ok " + "€".encode()[:2])
    chunk = read_chunk(log, 0)
    assert (chunk.content, chunk.next_offset, chunk.size) == ("ok ", 3, 5)


def test_offset_past_the_end_is_empty(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("short")
    chunk = read_chunk(log, 10_000_000_000)
    assert (chunk.content, chunk.next_offset, chunk.size) == ("", 10_000_000_000, 5)


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_chunk(tmp_path / "nope.log", 0).content == ""


def test_error_line_prefers_the_exception(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "INFO 11-26 loading\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
        "INFO 11-26 shutting down\n"
    )
    assert last_error_line(log) == (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )


def test_error_line_falls_back_to_the_last_line(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("\x1b[32mINFO\x1b[0m starting\nINFO bye\n\n")
    assert last_error_line(log) == "INFO bye"


def test_a_configuration_error_line_carries_its_reason(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    log.write_text(
        "INFO starting\n"
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
        "  Value error, Sleep mode is not supported on current platform. "
        "[type=value_error, input_value=ArgsKwargs((), {}), input_type=ArgsKwargs]\n"
        "    For further information visit https://errors.pydantic.dev/2.14/v/value_error\n"
    )
    assert last_error_line(log) == (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig: "
        "Value error, Sleep mode is not supported on current platform."
    )


def test_a_ray_version_mismatch_has_its_advice(tmp_path: Path) -> None:
    log = tmp_path / "across.log"
    log.write_text(
        "INFO Connecting to existing Ray cluster at address: 10.0.0.1:6379\n"
        "RuntimeError: Version mismatch: The cluster was started with:\n"
        "    Ray: 2.60.0\n"
        "This process on node 10.0.0.2 was started with:\n"
        "    Ray: 2.51.1\n"
    )
    advice = known_cause(log)
    assert advice is not None
    assert "the Ray of vLLM's Python" in advice

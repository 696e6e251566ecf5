"""Streaming a multipart/form-data upload (`POST /v1/files`) straight into a file on disk.

The body is parsed as it arrives (python-multipart's push parser, the one Starlette uses);
the `file` part's bytes go to the destination as they come, so an upload of any size costs
a few chunks of memory. Other fields (`purpose`) are small and held in memory, capped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Receive

from vllm_bootstrap.asgi import ClientGone

MAX_FIELD_BYTES = 1024
MAX_PARTS = 16


class UploadRefused(Exception):
    """The upload cannot be taken as sent; the message says what to fix."""

    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UploadTooLarge(UploadRefused):
    code = "file_too_large"


class StorageFull(UploadRefused):
    code = "storage_full"


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    bytes: int = 0


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    value: bytearray = field(default_factory=bytearray)
    is_file: bool = False


class _Sink:
    """The parser's callbacks: headers per part, the file part's bytes to `fd`."""

    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.upload = Upload()
        self.parts = 0
        self.part = _Part()
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.ended = False  # the closing boundary arrived

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self.header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadRefused(f"more than {MAX_PARTS} form fields")
        self.part = _Part()

    def header_end(self) -> None:
        self.part.headers[bytes(self.header_name).lower()] = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        self.part.name = options.get(b"name", b"").decode(errors="replace")
        filename = options.get(b"filename")
        if self.part.name == "file":
            if self.upload.filename is not None:
                raise UploadRefused("more than one `file` field")
            self.part.is_file = True
            self.upload.filename = (filename or b"upload.jsonl").decode(errors="replace")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.is_file:
            self.upload.bytes += end - start
            if self.upload.bytes > self.max_bytes:
                raise UploadTooLarge(
                    f"file over {self.max_bytes} bytes, the limit (VLLM_BOOTSTRAP_MAX_FILE_BYTES)"
                )
            _write_all(self.fd, memoryview(data)[start:end])
            return
        self.part.value.extend(data[start:end])
        if len(self.part.value) > MAX_FIELD_BYTES:
            raise UploadRefused(f"form field `{self.part.name}` over {MAX_FIELD_BYTES} bytes")

    def end(self) -> None:
        self.ended = True

    def part_end(self) -> None:
        if not self.part.is_file and self.part.name:
            self.upload.fields[self.part.name] = self.part.value.decode(errors="replace")


def boundary_of(content_type: bytes) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadRefused(
            "upload the file as multipart/form-data with fields `purpose` and `file`"
        )
    return boundary


async def receive_upload(receive: Receive, boundary: bytes, path: Path, max_bytes: int) -> Upload:
    """Write the `file` part to `path` (created, private) as the body arrives; the fields."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        sink = _Sink(fd, max_bytes)
        parser = MultipartParser(boundary, sink.callbacks())  # type: ignore[arg-type]
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            parser.write(message.get("body", b""))
            more = message.get("more_body", False)
        parser.finalize()
        if not sink.ended:
            raise UploadRefused(
                "the multipart body ended before its closing boundary: the upload was cut off"
            )
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)  # a local unlink: microseconds
        raise
    os.close(fd)
    return sink.upload


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]

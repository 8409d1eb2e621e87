"""A multipart/form-data upload read as it arrives: the file part goes to a
spooled temporary file (memory, then disk) while its bytes and non-blank
lines are counted, and the upload is refused (413) as soon as it passes the
limit, without reading the rest of the body."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import python_multipart
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .errors import APIError, bad_request

SPOOL_BYTES = 1 << 20  # held in memory up to this, then on disk
FIELD_BYTES = 4096  # a form field other than the file
OVERHEAD_BYTES = 64 * 1024  # multipart boundaries, headers and small fields around the file


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    file: tempfile.SpooledTemporaryFile | None = None
    filename: str | None = None
    size: int = 0
    lines: int = 0  # non-blank lines

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def too_large(limit: int) -> APIError:
    return APIError(413, f"the file is over the limit of {limit} bytes ({limit // (1024 * 1024)} MB)",
                    param="file", code="file_too_large")


class _Reader:
    """python-multipart callbacks filling an Upload."""

    def __init__(self, limit: int):
        self.limit = limit
        self.up = Upload()
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self._part: str | None = None  # the field name of the part being read
        self._is_file = False
        self._buf = bytearray()
        self._line_open = False  # the current line has a non-blank byte

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self._headers, self._buf = {}, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._part = opts.get(b"name", b"").decode("latin-1")
        self._is_file = self._part == "file" and self.up.file is None
        if self._is_file:
            self.up.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
            self.up.filename = opts.get(b"filename", b"").decode("utf-8", "replace") or None

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self._is_file:
            self._buf += chunk
            if len(self._buf) > FIELD_BYTES:
                raise bad_request(f"form field {self._part!r} is over {FIELD_BYTES} bytes", self._part or None)
            return
        self.up.size += len(chunk)
        if self.up.size > self.limit:
            raise too_large(self.limit)
        self._count_lines(chunk)
        self.up.file.write(chunk)

    def _count_lines(self, chunk: bytes) -> None:
        pieces = chunk.split(b"\n")
        for i, piece in enumerate(pieces):
            self._line_open = self._line_open or bool(piece.strip())
            if i < len(pieces) - 1:  # a newline ends this line
                self.up.lines += self._line_open
                self._line_open = False

    def part_end(self) -> None:
        if self._is_file:
            self.up.lines += self._line_open
            self._line_open = False
            self._is_file = False
        elif self._part:
            self.up.fields.setdefault(self._part, self._buf.decode("utf-8", "replace"))


async def read_upload(request: Request, limit: int) -> Upload:
    """The form's fields and its `file` part, spooled; 413 past limit, 400 if not multipart."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not opts.get(b"boundary"):
        raise bad_request("send the upload as multipart/form-data with a `file` and a `purpose` field", "file")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + OVERHEAD_BYTES:
        raise too_large(limit)
    reader = _Reader(limit)
    parser = python_multipart.MultipartParser(opts[b"boundary"], reader.callbacks())
    try:
        async for chunk in request.stream():
            await run_in_threadpool(parser.write, chunk)  # the spool may be on disk: off the event loop
        parser.finalize()
    except MultipartParseError as e:
        reader.up.close()
        raise bad_request(f"the multipart body is malformed: {e}", "file") from None
    except BaseException:
        reader.up.close()
        raise
    if reader.up.file is not None:
        reader.up.file.seek(0)
    return reader.up

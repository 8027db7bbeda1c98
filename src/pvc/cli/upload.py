"""Streaming a local file to the API as upstream's client does (`storage volume upload`, OVA upload).

The file is sent as the multipart field `file`, read chunk by chunk as httpx sends it (never
whole into memory), with a progress bar on a terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO, Any, BinaryIO, cast

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from pvc.cli.state import CLIState


class _UploadReader:
    """A binary file that reports progress as httpx reads it, chunk by chunk (never all at once)."""

    def __init__(self, handle: BinaryIO, advance: Callable[[int], None]) -> None:
        self.handle = handle
        self.name = handle.name
        self.advance = advance

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.advance(len(chunk))
        return chunk

    def fileno(self) -> int:  # lets httpx size the body from fstat, so it is sent with Content-Length
        return self.handle.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()


def open_image(path: str) -> BinaryIO:
    """Open the image to upload (a seam for tests)."""
    return open(path, "rb")


def upload_file(state: CLIState, filename: str, url: str, params: dict[str, Any]) -> httpx.Response:
    """POST the file streamed as the multipart field `file`, with a progress bar on a terminal;
    the API's response."""
    size = os.path.getsize(filename)
    show = not (state.quiet or state.silent) and sys.stderr.isatty()
    progress = Progress(BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn(),
                        console=state.stderr_console(), disable=not show, transient=False)
    with open_image(filename) as handle, progress:
        bar = progress.add_task("upload", total=size)
        reader = _UploadReader(handle, lambda n: progress.advance(bar, n))
        files = {"file": (os.path.basename(filename), cast(IO[bytes], reader), "application/octet-stream")}
        return state.api().call("POST", url, params=params, files=files)

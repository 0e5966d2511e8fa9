"""Media bytes fetched from providers (LINE content), kept as files under the data directory, bounded in size.

Why files and not `data:` URLs in the message row: a row's media list travels
in every message read, list page, event and webhook; inline bytes would
bloat all of them (and push list pages past gRPC's message size limit). Here
the row keeps a short URL (`/v1.0/media/{id}`, served with an API token) and
the bytes stay on disk once.

Layout: `<root>/<customer_id>/<media_id>.bin` plus `<media_id>.type` (the
MIME type). The `.type` file is written first and the `.bin` renamed into
place last, so a file that can be served is always complete. Tenancy is the
path: a customer's token can only reach its own directory.

Bounded twice: each item by `max_item_bytes` (checked while the bytes
arrive) and the directory by `max_total_bytes`, counted by this process from
a scan at start. Nothing is evicted (a stored URL must keep working); past
the bound new items are refused and the caller keeps the message without
the bytes. Several replicas need this directory on a shared volume until a
media store replaces it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
DEFAULT_MIME = "application/octet-stream"


class MediaRefused(Exception):
    """The item is larger than one item may be, or the directory is full; the message says which."""


@dataclass(frozen=True, slots=True)
class StoredMedia:
    id: str
    size: int
    mime_type: str


@dataclass(frozen=True, slots=True)
class MediaFile:
    path: Path
    mime_type: str
    size: int


class MediaFiles:
    def __init__(self, root: Path, *, max_total_bytes: int, max_item_bytes: int) -> None:
        self.root = root
        self.max_total_bytes = max_total_bytes
        self.max_item_bytes = max_item_bytes
        self._lock = threading.Lock()
        self._used: int | None = None  # scanned on first use, off the caller's hot path

    def _usage(self) -> int:
        if self._used is None:
            total = 0
            if self.root.is_dir():
                for path in self.root.glob("*/*.bin"):
                    with contextlib.suppress(FileNotFoundError):
                        total += path.stat().st_size
            self._used = total
        return self._used

    def reserve(self, size: int) -> None:
        """Count `size` bytes against the bound before writing them; MediaRefused past it."""
        if size > self.max_item_bytes:
            raise MediaRefused(f"larger than {self.max_item_bytes} bytes")
        with self._lock:
            used = self._usage()
            if used + size > self.max_total_bytes:
                raise MediaRefused(f"the media directory holds its limit of {self.max_total_bytes} bytes")
            self._used = used + size

    def _release(self, size: int) -> None:
        with self._lock:
            if self._used is not None:
                self._used = max(0, self._used - size)

    def save(self, customer_id: str, data: bytes, mime_type: str) -> StoredMedia:
        """Store `data` for `customer_id` (blocking file I/O: call it off the event loop)."""
        self.reserve(len(data))
        mime = mime_type if _MIME.match(mime_type or "") else DEFAULT_MIME
        media_id = str(uuid.uuid4())
        folder = self._folder(customer_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{media_id}.type").write_text(mime, encoding="ascii")
            staging = folder / f".{media_id}.part"
            with open(staging, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, folder / f"{media_id}.bin")
        except BaseException:
            self._release(len(data))
            raise
        return StoredMedia(media_id, len(data), mime)

    def remove(self, customer_id: str, media_id: str) -> None:
        """Drop an item nobody refers to (its message turned out to be a repeat)."""
        folder = self._folder(customer_id)
        data = folder / f"{media_id}.bin"
        try:
            size = data.stat().st_size
            data.unlink()
        except FileNotFoundError:
            return
        (folder / f"{media_id}.type").unlink(missing_ok=True)
        self._release(size)

    def find(self, customer_id: str, media_id: str) -> MediaFile | None:
        """The customer's item `media_id`, None for an unknown id, another customer's, or a malformed one."""
        try:
            media_id = str(uuid.UUID(media_id))
        except ValueError:
            return None
        folder = self._folder(customer_id)
        path = folder / f"{media_id}.bin"
        try:
            size = path.stat().st_size
            mime = (folder / f"{media_id}.type").read_text(encoding="ascii").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return MediaFile(path, mime if _MIME.match(mime) else DEFAULT_MIME, size)

    def _folder(self, customer_id: str) -> Path:
        return self.root / str(uuid.UUID(customer_id))  # a UUID: never a path outside root

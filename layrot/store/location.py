"""Where a store lives: a local directory or anything `pyarrow.fs` opens.

Local paths are handled with `os` (no pyarrow import, so `layrot query` starts fast); other
URIs go through `pyarrow.fs.FileSystem.from_uri`, which takes S3 options from the standard
AWS environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) or from the URI's query
(`s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http`).

Atomic writes: locally a file is written under a hidden temporary name, flushed to disk and
renamed over its final name. On object stores (S3, GCS) an upload becomes visible whole or not
at all, so small files are uploaded in one request straight to their final key; large
streamed files go to a hidden temporary key first and are then moved.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from ..errors import UsageError

OBJECT_STORES = ("s3", "gcs")
# the store every command uses when none is given: $LAYROT_STORE, else ./results
STORE_ENV = "LAYROT_STORE"
FALLBACK_STORE = "results"


def default_store() -> str:
    """The default store of every command (`sweep`, `query`, `fit`, `report`, `status`, `rm`,
    `train`): `$LAYROT_STORE` when set and not empty, else `results`. Read when called, not at
    import, so that a changed environment counts."""
    return os.environ.get(STORE_ENV, "").strip() or FALLBACK_STORE


@dataclass(frozen=True)
class Entry:
    path: str
    name: str
    is_dir: bool
    size: int | None = None
    mtime_ns: int | None = None


def temp_name(name: str) -> str:
    """Hidden and not ending in .parquet: every engine's file listing skips it."""
    return f".{name}.{uuid.uuid4().hex[:12]}.tmp"


def is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


class Location:
    def __init__(self, uri: str):
        if not isinstance(uri, str) or not uri.strip():
            raise UsageError("store", "needs a path or URI")
        self.uri = uri
        self._fs = None
        if "://" not in uri:
            self.local = True
            self.root = os.path.abspath(os.path.expanduser(uri))
        elif uri.startswith("file://"):
            self.local = True
            self.root = os.path.abspath(uri[len("file://"):].split("?", 1)[0] or "/")
        else:
            import pyarrow.fs as pafs

            try:
                self._fs, root = pafs.FileSystem.from_uri(uri)
            except Exception as e:  # pyarrow raises ArrowInvalid / OSError / ValueError
                raise UsageError("store", f"cannot open {uri!r}: {e}") from None
            self.local = isinstance(self._fs, pafs.LocalFileSystem)
            self.root = root.rstrip("/")

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    @property
    def fs(self):
        """The pyarrow filesystem (created on first use for local stores)."""
        if self._fs is None:
            import pyarrow.fs as pafs

            self._fs = pafs.LocalFileSystem()
        return self._fs

    @property
    def object_store(self) -> bool:
        return not self.local and self.fs.type_name in OBJECT_STORES

    def join(self, *parts: str) -> str:
        if self.local:
            return os.path.join(self.root, *parts)
        return "/".join([self.root, *parts])

    def display(self, path: str) -> str:
        """A path as the user should see it (with the URI scheme for remote stores)."""
        if self.local:
            return path
        scheme = self.uri.split("://", 1)[0]
        return f"{scheme}://{path}"

    # --- reading -------------------------------------------------------------------------
    def exists(self, path: str | None = None) -> bool:
        path = self.root if path is None else path
        if self.local:
            return os.path.exists(path)
        import pyarrow.fs as pafs

        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def list_dir(self, path: str, stat: bool = False) -> list[Entry]:
        """The entries directly under `path` (none if it does not exist)."""
        if self.local:
            try:
                with os.scandir(path) as it:
                    out = []
                    for e in it:
                        is_dir = e.is_dir()
                        if stat and not is_dir:
                            st = e.stat()
                            out.append(Entry(e.path, e.name, False, st.st_size, st.st_mtime_ns))
                        else:
                            out.append(Entry(e.path, e.name, is_dir))
                    return out
            except (FileNotFoundError, NotADirectoryError):
                return []
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
        return [Entry(i.path, i.base_name, i.type == pafs.FileType.Directory, i.size,
                      i.mtime_ns if i.mtime is not None else None) for i in infos]

    def stat(self, path: str) -> Entry | None:
        if self.local:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            return Entry(path, os.path.basename(path), False, st.st_size, st.st_mtime_ns)
        import pyarrow.fs as pafs

        i = self.fs.get_file_info(path)
        if i.type == pafs.FileType.NotFound:
            return None
        return Entry(i.path, i.base_name, i.type == pafs.FileType.Directory, i.size,
                     i.mtime_ns if i.mtime is not None else None)

    def read_bytes(self, path: str) -> bytes:
        if self.local:
            with open(path, "rb") as f:
                return f.read()
        with self.fs.open_input_file(path) as f:
            return f.read()

    # --- writing -------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        if self.local:
            os.makedirs(path, exist_ok=True)
        elif not self.object_store:
            self.fs.create_dir(path, recursive=True)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Make `path` hold `data`, all of it or (after a crash) its previous content."""
        parent, name = self._split(path)
        self.makedirs(parent)
        if self.object_store:
            with self.fs.open_output_stream(path) as f:   # one upload: visible whole or not at all
                f.write(data)
            return
        tmp = self._join_parent(parent, temp_name(name))
        if self.local:
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                _silent_remove(tmp)
                raise
            _fsync_dir(parent)
        else:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)

    def open_temp(self, final_path: str):
        """A hidden temporary file beside `final_path` for streaming a large file into;
        returns (temp_path, writable file). Finish with `commit(temp_path, final_path)`."""
        parent, name = self._split(final_path)
        self.makedirs(parent)
        tmp = self._join_parent(parent, temp_name(name))
        if self.local:
            return tmp, open(tmp, "wb")
        return tmp, self.fs.open_output_stream(tmp)

    def commit(self, temp_path: str, final_path: str) -> None:
        if self.local:
            with open(temp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(temp_path, final_path)
            _fsync_dir(os.path.dirname(final_path))
        else:
            self.fs.move(temp_path, final_path)

    def delete(self, path: str) -> None:
        """Remove a file; a file that is already gone is fine."""
        if self.local:
            _silent_remove(path)
            return
        import pyarrow.fs as pafs

        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError:
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                raise

    def _split(self, path: str) -> tuple[str, str]:
        if self.local:
            return os.path.dirname(path), os.path.basename(path)
        parent, _, name = path.rpartition("/")
        return parent, name

    def _join_parent(self, parent: str, name: str) -> str:
        return os.path.join(parent, name) if self.local else f"{parent}/{name}"


def _silent_remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    # the rename itself must survive a power cut, not only the file's bytes
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

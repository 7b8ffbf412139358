"""Downloads with checksum verification (standard library urllib only).

Every download goes to a temporary file beside its destination and is renamed into
place only after its checksum verified, so an interrupted or corrupt transfer never
leaves a file that a later load would trust.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

TIMEOUT_S = 60.0
_USER_AGENT = "depthaccel-data-loader (python urllib)"


class DownloadError(OSError):
    """No URL could be fetched (offline, HTTP error) or nothing fetched verified."""


#: ``progress(label, total_bytes_or_None)`` returns ``update(n)``: called with each
#: chunk's size, and with -1 when the transfer ends (e.g. a tqdm bar; see data.catalog).
Progress = Callable[[str, "int | None"], Callable[[int], None]]
_CHUNK = 1 << 16


def fetch_bytes(url: str, timeout: float = TIMEOUT_S, progress: Progress | None = None) -> bytes:
    """The body at ``url`` (http(s):// or file://), read in chunks; ``progress`` (optional)
    is told the size (Content-Length, when the server sends one) and each chunk."""
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if progress is None:
            return resp.read()
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        update = progress(url.rsplit("/", 1)[-1][:40], total)
        parts = []
        try:
            while chunk := resp.read(_CHUNK):
                parts.append(chunk)
                update(len(chunk))
        finally:
            update(-1)
        return b"".join(parts)


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_file(
    urls: Sequence[str],
    dest: Path,
    check: Callable[[bytes], str | None],
    progress: Progress | None = None,
) -> str:
    """Fetch the first of ``urls`` that answers and passes ``check``; write it to ``dest``.

    ``check(data)`` returns None when the bytes are good, else a reason. Returns the URL
    used. Raises DownloadError listing every URL tried and why it failed.
    """
    errors = []
    for url in urls:
        try:
            data = fetch_bytes(url, progress=progress)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        reason = check(data)
        if reason is not None:
            errors.append(f"{url}: {reason}")
            continue
        _write_atomic(dest, data)
        return url
    raise DownloadError(f"could not download {dest.name}: " + "; ".join(errors))


def sha256_check(expected: str) -> Callable[[bytes], str | None]:
    def check(data: bytes) -> str | None:
        got = hashlib.sha256(data).hexdigest()
        return None if got == expected else f"sha256 {got} != expected {expected}"

    return check


def _zip_members(data: bytes, depth: int = 0) -> dict[str, bytes]:
    """Base name -> bytes of every file in a zip, descending into nested zips."""
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = info.filename.rsplit("/", 1)[-1]
            body = zf.read(info)
            if name.lower().endswith(".zip") and depth < 2:
                out.update(_zip_members(body, depth + 1))
            else:
                out.setdefault(name, body)
    return out


def download_zip_members(
    urls: Sequence[str],
    directory: Path,
    wanted: Mapping[str, str],
    progress: Progress | None = None,
) -> tuple[str, list[str]]:
    """Fetch a zip archive, extract the members named in ``wanted`` (base name -> sha256)
    into ``directory``, verifying each one's sha256 before it is written.

    Returns (URL used, names written). Raises DownloadError when no URL gives an archive
    holding every wanted file with the right checksum.
    """
    errors = []
    for url in urls:
        try:
            data = fetch_bytes(url, progress=progress)
            members = _zip_members(data)
        except (urllib.error.URLError, OSError, ValueError, zipfile.BadZipFile) as exc:
            errors.append(f"{url}: {exc}")
            continue
        problems = []
        for name, expected in wanted.items():
            if name not in members:
                problems.append(f"{name} not in archive")
                continue
            got = hashlib.sha256(members[name]).hexdigest()
            if got != expected:
                problems.append(f"{name} sha256 {got} != expected {expected}")
        if problems:
            errors.append(f"{url}: " + "; ".join(problems))
            continue
        for name in wanted:
            _write_atomic(directory / name, members[name])
        return url, list(wanted)
    raise DownloadError("could not download " + ", ".join(wanted) + ": " + "; ".join(errors))

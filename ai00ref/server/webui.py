"""The web UI's static files at `/`: what no API route answers (ai00-server.md §1.1, §11; spec/api.md §10).

Our own UI ships in the package (`ai00ref/server/www/`: plain HTML, CSS and ES modules) and is served when
`[web].path` names nothing that exists (Ai00's default `assets/www/index.zip` is not shipped here) or cannot be
read. `[web].path` may name a zip (Ai00's `index.zip`) or a folder to serve instead; without `[web]` there is no UI.
Ai00 extracts the zip into `assets/temp` at start; here a zip is read into memory once (nothing is written, nothing
outside it can be reached), and plugin zips in the zip's folder's `plugins/` are served under `/plugins/<stem>/` as
Ai00 extracts them. Any GET that names no file gets `index.html` (a single-page app's routes), except under the API
prefixes, which answer JSON 404s.
"""
from __future__ import annotations

import logging
import mimetypes
import zipfile
from pathlib import Path, PurePosixPath

from aiohttp import web

from ai00ref.server.errors import ApiError

log = logging.getLogger("ai00ref.server")
MAX_UI_BYTES = 256 * 1024 * 1024  # the uncompressed size of the UI files held in memory
API_PREFIXES = ("/api/", "/admin/", "/v1/")
INDEX = "index.html"
BUNDLED_UI = Path(__file__).parent / "www"  # our own UI, package data


class StaticFiles:
    """Relative POSIX path -> bytes."""

    def __init__(self, files: dict[str, bytes], source: str):
        self.files, self.source = files, source

    def find(self, path: str) -> tuple[str, bytes] | None:
        """(name, bytes) of `path`, or of its folder's index.html; None if neither is there."""
        name = path.strip("/")
        for candidate in ((name, f"{name}/{INDEX}") if name else (INDEX,)):
            if candidate in self.files:
                return candidate, self.files[candidate]
        return None


def _read_zip(path: Path, prefix: str, files: dict[str, bytes], budget: list[int]) -> None:
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            budget[0] -= member.file_size
            if budget[0] < 0:
                raise ValueError(f"{path}: the web UI is larger than {MAX_UI_BYTES} bytes uncompressed")
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts:
                continue  # never served: lookups are by normalized name
            files[prefix + str(name)] = archive.read(member)


def _read_folder(folder: Path) -> dict[str, bytes]:
    files, total = {}, 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.resolve().is_relative_to(folder.resolve()):
            total += path.stat().st_size
            if total > MAX_UI_BYTES:
                raise ValueError(f"{folder}: the web UI is larger than {MAX_UI_BYTES} bytes")
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def bundled_ui() -> StaticFiles:
    return StaticFiles(_read_folder(BUNDLED_UI), str(BUNDLED_UI))


def _read_ui(path: Path) -> StaticFiles:
    if path.is_dir():
        return StaticFiles(_read_folder(path), str(path))
    files, budget = {}, [MAX_UI_BYTES]
    _read_zip(path, "", files, budget)
    for plugin in sorted((path.parent / "plugins").glob("*.zip")):
        if plugin.name != "api.zip":  # as Ai00
            _read_zip(plugin, f"plugins/{plugin.stem}/", files, budget)
    return StaticFiles(files, str(path))


def load_static(path: Path | None) -> StaticFiles | None:
    """The UI's files: those at `[web].path`, else the bundled UI (logged); None without `[web]` (`path` None)."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        log.info("no web UI at %s: serving the bundled UI", path)
        return bundled_ui()
    try:
        return _read_ui(path)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        log.error("the web UI at %s cannot be served (%s): serving the bundled UI", path, error)
        return bundled_ui()


def static_response(static: StaticFiles | None, path: str) -> web.Response:
    """A GET that no API route answers: the UI's file, or its index.html (a single-page app's own routes)."""
    if path.startswith(API_PREFIXES) or static is None:
        raise ApiError(404, f"no route GET {path}" if static else "no web UI is configured ([web].path)",
                       code="not_found")
    found = static.find(path) or static.find("")
    if found is None:
        raise ApiError(404, f"{static.source} has no {path} and no {INDEX}", code="not_found")
    name, body = found
    return web.Response(body=body, content_type=mimetypes.guess_type(name)[0] or "application/octet-stream")

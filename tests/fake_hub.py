"""A Hugging Face Hub on 127.0.0.1 that answers what huggingface_hub's snapshot_download asks (repo
info, the file tree, each file's metadata and bytes), so the real download code runs without the
internet. A file can be served slowly, chunk by chunk, so a download can be stopped part-way."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@dataclass
class FakeHub:
    repo_id: str
    files: dict[str, bytes]  # file name -> its bytes
    slow: dict[str, float] = field(default_factory=dict)  # file name -> seconds to wait between chunks
    chunk: int = 64 * 1024
    sent: dict[str, int] = field(default_factory=dict)  # bytes of each file sent so far
    dropped: set[str] = field(default_factory=set)  # files whose transfer the client ended part-way

    @classmethod
    def of_folder(cls, repo_id: str, folder: Path, **kw) -> "FakeHub":
        return cls(repo_id, {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}, **kw)

    def start(self) -> str:
        """Serve on a free port of 127.0.0.1 until `stop()`; returns the endpoint URL."""
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- answers ---------------------------------------------------------------------------------

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = h.path.split("?", 1)[0]
        repo = re.escape(self.repo_id)
        if re.fullmatch(rf"/api/models/{repo}/revision/[^/]+", path):
            return self._json(h, {"id": self.repo_id, "modelId": self.repo_id, "sha": COMMIT,
                                  "siblings": [{"rfilename": n} for n in self.files]}, body)
        if re.fullmatch(rf"/api/models/{repo}/tree/[^/]+/?", path):
            tree = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for n, b in self.files.items()]
            return self._json(h, tree, body)
        match = re.fullmatch(rf"/{repo}/resolve/[^/]+/(.+)", path)
        if match and match.group(1) in self.files:
            return self._file(h, match.group(1), body)
        h.send_response(404)
        h.send_header("X-Error-Code", "EntryNotFound")
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _json(self, h, value, body: bool) -> None:
        data = json.dumps(value).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _file(self, h, name: str, body: bool) -> None:
        data = self.files[name]
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", COMMIT)
        h.end_headers()
        if not body:
            return
        pause = self.slow.get(name, 0.0)
        try:
            for start in range(0, len(data), self.chunk):
                h.wfile.write(data[start:start + self.chunk])
                self.sent[name] = start + min(self.chunk, len(data) - start)
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: a stopped download
            self.dropped.add(name)

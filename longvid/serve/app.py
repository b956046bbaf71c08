"""``longvid serve``: one batched model for many live streams over HTTP (FastAPI).

Endpoints (JSON unless said):
  ``POST /v1/streams {"source", "ask": [...], "every": s}`` -> ``{"id", ...}`` (201)
  ``GET /v1/streams`` -> ``{"streams": [...]}`` (status, clips, latency, dropped, last record)
  ``GET /v1/streams/{id}`` -> one stream
  ``GET /v1/streams/{id}/events?since=N`` -> Server-Sent Events, one record each (``id:`` its number);
      ``&follow=false``: the records kept now, then the reply ends
  ``POST /v1/streams/{id}/ask {"question"}`` -> the answer from the stream's memory now (LMMs)
  ``DELETE /v1/streams/{id}``
  ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /`` (a page: streams, labels, a question box)

Safety: errors are ``{"error": "..."}`` with a 4xx status; with a token every ``/v1`` and
``/metrics`` request needs ``Authorization: Bearer TOKEN``; sources are URLs of the allowed
schemes, or paths under ``allow_dir`` (nothing else is read); request bodies are bounded.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from longvid.errors import LongvidError
from longvid.serve.engine import LiveEngine, LiveStream
from longvid.video.types import VideoError

log = logging.getLogger("longvid.serve")

DEFAULT_SCHEMES = ("udp", "rtp", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "http", "https")


@dataclass(frozen=True)
class ServeSettings:
    """How the server guards itself. ``token``: the bearer token (None: no auth, loopback
    only); ``schemes``: URL schemes a source may use; ``allow_dir``: local files allowed
    under this folder (None: no local files); ``max_body``: bytes a request body may hold;
    ``state_dir``: where each stream's memory is saved every ``save_every`` seconds."""

    token: str | None = None
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    allow_dir: str | None = None
    max_body: int = 16384
    state_dir: str | None = None
    save_every: float = 30.0
    max_question: int = 2000
    model_name: str = ""


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


def check_token(request: Request, token: str | None) -> None:
    """HTTPProblem 401 unless the request carries ``Bearer token`` (no token: nothing to check)."""
    if token is None:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise HTTPProblem(401, "a bearer token is required (Authorization: Bearer TOKEN)")


async def json_object(request: Request) -> dict:
    """The request body as a JSON object, or HTTPProblem 400 saying why not."""
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        raise HTTPProblem(400, "request body is not JSON") from None
    if not isinstance(data, dict):
        raise HTTPProblem(400, "request body must be a JSON object")
    return data


def check_source(source, settings: ServeSettings) -> str:
    """The source as it will be opened, or HTTPProblem (400/403/404) saying why not."""
    if not isinstance(source, str) or not source.strip():
        raise HTTPProblem(400, "source must be a non-empty string (a URL, or a path under --allow-dir)")
    if len(source) > 2048 or any(ord(ch) < 32 for ch in source):
        raise HTTPProblem(400, "source is too long or holds control characters")
    scheme = urlsplit(source).scheme.lower()
    if scheme:  # a URL, or an FFmpeg protocol (concat:, file:, pipe:, ...): only the allowed schemes
        if scheme not in settings.schemes:
            allowed = ", ".join(settings.schemes) or "none"
            raise HTTPProblem(403, f"source scheme {scheme!r} is not allowed (allowed: {allowed})")
        return source
    if source == "-":
        raise HTTPProblem(403, "the server does not read its stdin")
    if settings.allow_dir is None:
        raise HTTPProblem(403, "local paths are not allowed (start the server with --allow-dir FOLDER)")
    root = os.path.realpath(settings.allow_dir)
    path = os.path.realpath(source if os.path.isabs(source) else os.path.join(root, source))
    if os.path.commonpath([root, path]) != root:
        raise HTTPProblem(403, "source is outside --allow-dir")
    if not os.path.exists(path):
        raise HTTPProblem(404, "no such file under --allow-dir")
    return path


@dataclass
class Server:
    """The engine and its stepping thread, shared by the app's handlers."""

    engine: LiveEngine
    settings: ServeSettings
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    last_save: float = field(default_factory=time.monotonic)
    resume_on_start: bool = True  # resume every stream of state_dir (a Ray replica loads its own on demand)

    def start(self) -> None:
        if self.settings.state_dir:
            os.makedirs(self.settings.state_dir, exist_ok=True)
            if self.resume_on_start:
                self.resume()
        self.thread = threading.Thread(target=self._loop, name="longvid-engine", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.engine.step(timeout=0.1)
            except Exception:  # a failing step must not end the server; each stream's records say the rest
                log.exception("engine step failed")
                time.sleep(0.5)
            if self.settings.state_dir and time.monotonic() - self.last_save >= self.settings.save_every:
                self.save_all()

    def save_all(self) -> None:
        self.last_save = time.monotonic()
        for stream in self.engine.live():
            try:
                self.engine.save(stream, self.settings.state_dir)
            except OSError as err:
                log.warning("cannot save stream %s: %s", stream.id, err)

    def resume(self) -> None:
        """Start again the streams whose memory ``state_dir`` holds."""
        from longvid.core.state import load_state

        folder = self.settings.state_dir
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    meta = json.load(f)
                state = load_state(os.path.join(folder, f"{meta['id']}.safetensors"))
                self.engine.add(meta["source"], ask=meta.get("ask") or (), every=meta.get("every"), stream_id=meta["id"],
                                saved_state=state, resume=meta)
                log.warning("resumed stream %s (%s) from %s", meta["id"], meta["source"], folder)
            except (OSError, ValueError, KeyError, LongvidError) as err:
                log.warning("cannot resume %s: %s", name, err)

    def shutdown(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        if self.settings.state_dir:
            self.save_all()
        for stream in self.engine.live():
            stream.reader.stop(wait=False)
            self.engine.stepper.leave(stream.row)

    def forget(self, stream_id: str) -> None:
        if self.settings.state_dir:
            for suffix in (".json", ".safetensors"):
                path = os.path.join(self.settings.state_dir, f"{stream_id}{suffix}")
                if os.path.exists(path):
                    os.remove(path)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, before the app reads it."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_json(send, 413, {"error": f"request body over {self.limit} bytes"})
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _send_json(send, 413, {"error": f"request body over {self.limit} bytes"})
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_json(send, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def create_app(server: Server):
    """The FastAPI app serving ``server``'s engine (started and stopped with the app)."""
    from longvid.serve.metrics import prometheus_text
    from longvid.serve.page import PAGE

    engine, settings = server.engine, server.settings

    @asynccontextmanager
    async def lifespan(app):
        server.start()
        yield
        await asyncio.to_thread(server.shutdown)

    app = FastAPI(title="longvid serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPProblem)
    async def problem(request, err: HTTPProblem):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err):
        return JSONResponse({"error": "invalid request: " + "; ".join(str(e.get("msg")) for e in err.errors())[:300]},
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    def authorize(request: Request) -> None:
        check_token(request, settings.token)

    def stream_of(stream_id: str) -> LiveStream:
        stream = engine.get(stream_id)
        if stream is None:
            raise HTTPProblem(404, f"no stream {stream_id!r}")
        return stream

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE

    @app.get("/healthz")
    async def healthz():
        return {"ok": server.thread is not None and server.thread.is_alive(), "streams": len(engine.live()),
                "capacity": engine.stepper.capacity, "model": settings.model_name, "answers": engine.answers}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request):
        authorize(request)
        return PlainTextResponse(prometheus_text(engine, time.monotonic() - server.started),
                                 media_type="text/plain; version=0.0.4")

    @app.post("/v1/streams", status_code=201)
    async def create(request: Request):
        authorize(request)
        data = await json_object(request)
        unknown = sorted(set(data) - {"source", "ask", "every"})
        if unknown:
            raise HTTPProblem(400, f"unknown fields: {', '.join(unknown)} (want source, ask, every)")
        source = check_source(data.get("source"), settings)
        ask = data.get("ask") or []
        if isinstance(ask, str):
            ask = [ask]
        if not isinstance(ask, list) or not all(isinstance(q, str) and q.strip() for q in ask) or len(ask) > 16 \
                or any(len(q) > settings.max_question for q in ask):
            raise HTTPProblem(400, "ask must be a list of at most 16 non-empty questions")
        every = data.get("every")
        if every is not None and (isinstance(every, bool) or not isinstance(every, (int, float))):
            raise HTTPProblem(400, "every must be a number of seconds")
        if not engine.stepper.free:
            raise HTTPProblem(429, f"the server runs its maximum of {engine.stepper.capacity} streams")
        try:
            stream = await asyncio.to_thread(engine.add, source, ask, every)
        except VideoError as err:
            raise HTTPProblem(422, f"cannot read the source: {err.reason}") from None
        except LongvidError as err:
            raise HTTPProblem(429 if "slots are taken" in str(err) else 400, str(err)) from None
        return stream.describe()

    @app.get("/v1/streams")
    async def listing(request: Request):
        authorize(request)
        return {"streams": [s.describe() for s in engine.live() + engine.ended()], "capacity": engine.stepper.capacity}

    @app.get("/v1/streams/{stream_id}")
    async def one(stream_id: str, request: Request):
        authorize(request)
        return stream_of(stream_id).describe()

    @app.delete("/v1/streams/{stream_id}")
    async def delete(stream_id: str, request: Request):
        authorize(request)
        stream_of(stream_id)
        stream = await asyncio.to_thread(engine.remove, stream_id)
        server.forget(stream_id)
        if stream is None:
            raise HTTPProblem(409, f"stream {stream_id} has already ended")
        return {"id": stream_id, "status": stream.status, "clips": stream.clips}

    @app.post("/v1/streams/{stream_id}/ask")
    async def ask(stream_id: str, request: Request):
        authorize(request)
        stream_of(stream_id)
        data = await json_object(request)
        question = data.get("question")
        if not isinstance(question, str) or not question.strip() or len(question) > settings.max_question:
            raise HTTPProblem(400, f"question must be a non-empty string of at most {settings.max_question} characters")
        try:
            return await asyncio.to_thread(engine.ask, stream_id, question)
        except LongvidError as err:
            raise HTTPProblem(400, str(err)) from None

    @app.get("/v1/streams/{stream_id}/events")
    async def events(stream_id: str, request: Request, since: int = 0, follow: bool = True):
        authorize(request)
        stream_of(stream_id)
        last_seen = request.headers.get("last-event-id", "")
        if last_seen.isdigit():
            since = max(since, int(last_seen) + 1)

        async def records():
            next_seq = max(0, since)
            while True:
                kept, end = engine.records_since(stream_id, next_seq)
                if kept and kept[0][0] > next_seq:
                    yield f": records {next_seq}..{kept[0][0] - 1} are no longer kept\n\n"
                for number, record in kept:
                    yield f"id: {number}\ndata: {json.dumps(record)}\n\n"
                    next_seq = number + 1
                if not follow or (not engine.is_live(stream_id) and next_seq >= end):
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)

        return StreamingResponse(records(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return BodyLimit(app, settings.max_body)

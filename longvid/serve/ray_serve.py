"""``longvid serve --ray``: the same batched engine as a Ray Serve application.

Replicas (:func:`deployments`' ``StreamReplica``) each run a :class:`~longvid.serve.engine.LiveEngine`
and save their streams' memory (``save_state``) to a shared ``state_dir`` every
``save_every`` seconds. A stream is pinned to one replica by Ray Serve's model
multiplexing, with the stream id as the model id: a replica "loads" a stream by opening
its source and its memory from ``state_dir``. The ingress (``Router``) touches every stream
every few seconds, so when a replica goes away its streams load on a surviving one,
resuming from their last saved memory. The HTTP API is the embedded server's
(:mod:`longvid.serve.app`), less ``/metrics`` and the page.
"""


import asyncio
import json
import os
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from longvid.errors import LongvidError


def deployments(options: dict):
    """(Router, StreamReplica) Ray Serve deployments for ``options`` (model, checkpoint,
    settings: LiveSettings fields, capacity, state_dir, save_every, reset_on_reconnect,
    threads, workers, token, schemes, allow_dir, max_body, touch_every)."""
    from ray import serve

    from longvid.serve.app import BodyLimit, HTTPProblem, ServeSettings, check_source, check_token, json_object

    guard = ServeSettings(token=options.get("token"), schemes=tuple(options["schemes"]), allow_dir=options.get("allow_dir"),
                          max_body=options["max_body"])

    @serve.deployment
    class StreamReplica:
        def __init__(self):
            import torch

            from longvid.loading import DEFAULT_STREAM_PRESET, load_stream_model, shipped_labels
            from longvid.serve.app import Server
            from longvid.serve.engine import LiveEngine, live_settings_for

            torch.set_num_threads(options.get("threads") or 1)
            model, note = load_stream_model(options.get("model"), options.get("checkpoint"))
            labels = shipped_labels(options.get("model") or DEFAULT_STREAM_PRESET) if "shipped" in note else None
            settings = live_settings_for(model, **options["settings"])  # the model's clip length and size unless given
            self.engine = LiveEngine(model, settings, options["capacity"], labels=labels,
                                     reset_on_reconnect=options.get("reset_on_reconnect", False), workers=options.get("workers") or 1)
            self.state_dir = options["state_dir"]
            self.server = Server(self.engine, ServeSettings(state_dir=self.state_dir, save_every=options["save_every"]),
                                 resume_on_start=False)
            self.server.start()
            self.pid = os.getpid()

        @serve.multiplexed(max_num_models_per_replica=1024)
        async def stream(self, stream_id: str) -> str:
            return await asyncio.to_thread(self._load, stream_id)

        def _load(self, stream_id: str) -> str:
            """Start ``stream_id`` here: its source, and its memory when ``state_dir`` has it."""
            from longvid.core.state import load_state

            if self.engine.get(stream_id) is not None:
                return stream_id
            with open(os.path.join(self.state_dir, f"{stream_id}.json"), encoding="utf-8") as f:
                meta = json.load(f)
            memory = os.path.join(self.state_dir, f"{stream_id}.safetensors")
            saved = load_state(memory) if os.path.exists(memory) else None
            stream = self.engine.add(meta["source"], ask=meta.get("ask") or (), every=meta.get("every"), stream_id=stream_id,
                                     saved_state=saved, resume=meta if saved is not None else None)
            self.engine.save(stream, self.state_dir)
            return stream_id

        async def __call__(self, request: dict):
            from longvid.video.types import VideoError

            stream_id = serve.get_multiplexed_model_id()
            op = request["op"]
            if op == "delete":
                stream = await asyncio.to_thread(self.engine.remove, stream_id)
                self.server.forget(stream_id)
                return {"id": stream_id, "status": "stopped" if stream else "gone"}
            try:
                await self.stream(stream_id)
            except VideoError as err:
                return {"error": f"cannot read the source: {err.reason}", "status": 422}
            except (OSError, LongvidError) as err:
                return {"error": str(err), "status": 404 if isinstance(err, FileNotFoundError) else 400}
            if op == "describe":
                return {**self.engine.get(stream_id).describe(), "replica": self.pid}
            if op == "events":
                kept, end = self.engine.records_since(stream_id, request.get("since", 0))
                return {"records": kept, "next": end, "live": self.engine.is_live(stream_id)}
            if op == "ask":
                try:
                    return await asyncio.to_thread(self.engine.ask, stream_id, request["question"])
                except LongvidError as err:
                    return {"error": str(err), "status": 400}
            raise ValueError(f"unknown op {op!r}")

    app = FastAPI(title="longvid serve (Ray)", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=guard.max_body)

    @app.exception_handler(HTTPProblem)
    async def problem(request, err: HTTPProblem):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @serve.deployment(ray_actor_options={"num_cpus": 0})  # the ingress only forwards requests
    @serve.ingress(app)
    class Router:
        def __init__(self, replicas):
            self.replicas = replicas
            self.state_dir = options["state_dir"]
            self.ids = {name[:-5] for name in os.listdir(self.state_dir) if name.endswith(".json")}
            self.touching = asyncio.get_event_loop().create_task(self._touch_forever())

        async def _touch_forever(self):
            """Keep every stream loaded somewhere (a replica gone: its streams load elsewhere)."""
            while True:
                await asyncio.sleep(options.get("touch_every", 2.0))
                for stream_id in list(self.ids):
                    try:
                        await self._call(stream_id, {"op": "describe"})
                    except Exception:  # a replica going away: the next round retries
                        pass

        async def _call(self, stream_id: str, request: dict):
            reply = await self.replicas.options(multiplexed_model_id=stream_id).remote(request)
            if isinstance(reply, dict) and "error" in reply and "status" in reply:
                raise HTTPProblem(reply["status"], reply["error"])
            return reply

        def _authorize(self, request: Request) -> None:
            check_token(request, guard.token)

        def _known(self, stream_id: str) -> None:
            if stream_id not in self.ids:
                raise HTTPProblem(404, f"no stream {stream_id!r}")

        @app.get("/healthz")
        async def healthz(self):
            return {"ok": True, "streams": len(self.ids), "ray": True}

        @app.post("/v1/streams", status_code=201)
        async def create(self, request: Request):
            self._authorize(request)
            data = await json_object(request)
            source = check_source(data.get("source"), guard)
            ask = data.get("ask") or []
            if isinstance(ask, str) or not isinstance(ask, list) or not all(isinstance(q, str) and q.strip() for q in ask):
                raise HTTPProblem(400, "ask must be a list of non-empty questions")
            stream_id = uuid.uuid4().hex[:12]
            meta = {"id": stream_id, "source": source, "ask": ask, "every": data.get("every"), "clips": 0, "stream_time": 0.0}
            path = os.path.join(self.state_dir, f"{stream_id}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(meta, f)
            try:
                described = await self._call(stream_id, {"op": "describe"})
            except HTTPProblem:
                os.remove(path)
                raise
            self.ids.add(stream_id)
            return described

        @app.get("/v1/streams")
        async def listing(self, request: Request):
            self._authorize(request)
            streams = []
            for stream_id in sorted(self.ids):
                try:
                    streams.append(await self._call(stream_id, {"op": "describe"}))
                except HTTPProblem as err:
                    streams.append({"id": stream_id, "status": "failed", "error": err.message})
            return {"streams": streams}

        @app.get("/v1/streams/{stream_id}")
        async def one(self, stream_id: str, request: Request):
            self._authorize(request)
            self._known(stream_id)
            return await self._call(stream_id, {"op": "describe"})

        @app.post("/v1/streams/{stream_id}/ask")
        async def ask(self, stream_id: str, request: Request):
            self._authorize(request)
            self._known(stream_id)
            data = json.loads(await request.body() or b"{}")
            question = data.get("question") if isinstance(data, dict) else None
            if not isinstance(question, str) or not question.strip():
                raise HTTPProblem(400, "question must be a non-empty string")
            return await self._call(stream_id, {"op": "ask", "question": question})

        @app.delete("/v1/streams/{stream_id}")
        async def delete(self, stream_id: str, request: Request):
            self._authorize(request)
            self._known(stream_id)
            self.ids.discard(stream_id)
            return await self._call(stream_id, {"op": "delete"})

        @app.get("/v1/streams/{stream_id}/events")
        async def events(self, stream_id: str, request: Request, since: int = 0, follow: bool = True):
            self._authorize(request)
            self._known(stream_id)

            async def records():
                next_seq = since
                while True:
                    reply = await self._call(stream_id, {"op": "events", "since": next_seq})
                    for number, record in reply["records"]:
                        yield f"id: {number}\ndata: {json.dumps(record)}\n\n"
                        next_seq = number + 1
                    if not follow or (not reply["live"] and next_seq >= reply["next"]):
                        return
                    await asyncio.sleep(0.2)

            return StreamingResponse(records(), media_type="text/event-stream")

    return Router, StreamReplica


def run_ray(options: dict, host: str, port: int, replicas: int, log=None) -> None:
    """Start (or join, with RAY_ADDRESS) a Ray cluster and serve until SIGINT/SIGTERM."""
    import signal
    import threading

    import ray
    from ray import serve

    os.makedirs(options["state_dir"], exist_ok=True)
    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    Router, StreamReplica = deployments(options)
    cpus = {"num_cpus": (options.get("threads") or 1) * (options.get("workers") or 1)}  # the cores a replica's forwards use
    serve.run(Router.bind(StreamReplica.options(num_replicas=replicas, ray_actor_options=cpus).bind()), name="longvid",
              route_prefix="/")
    if log:
        log(f"serving on http://{host}:{port} with Ray Serve ({replicas} replicas, memory in {options['state_dir']})")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()

"""`longvid serve`: the HTTP API through a client on 127.0.0.1 (create, events, ask, delete,
auth, limits, bad sources), bitwise isolation of batched live slots, memory saved and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import httpx
import longvid
import pytest
import torch
import uvicorn

from conftest import longvid_script
from live_sources import Pusher, free_tcp_port, free_udp_port, write_mpegts
from longvid.serve.app import Server, ServeSettings, create_app
from longvid.serve.engine import BatchedStepper, LiveEngine
from longvid.core.state import load_state
from longvid.video.live import LiveReader, LiveSettings

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = LiveSettings(clip_frames=4, stride=2, size=32, read_timeout=2.0, open_timeout=1.5)


class Running:
    """A server on 127.0.0.1 in this process (uvicorn in a thread)."""

    def __init__(self, engine: LiveEngine, settings: ServeSettings):
        self.server = Server(engine, settings)
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.server), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the server did not start")

    def __exit__(self, *exc) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def camera_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cameras")
    write_mpegts(str(folder / "cam.ts"), seconds=2)
    return folder


@pytest.fixture(scope="module")
def served(camera_dir):
    engine = LiveEngine(longvid.build_model("memvit_tiny_recall"), SMALL, capacity=2)
    settings = ServeSettings(token=TOKEN, allow_dir=str(camera_dir), max_body=2048, model_name="memvit_tiny_recall")
    with Running(engine, settings) as running:
        yield running


def events(url: str, stream_id: str, since: int = 0, until_done: bool = True, limit: int = 10_000) -> list[tuple[int, dict]]:
    """The stream's Server-Sent Events (number, record) from ``since``, until its closing record."""
    found = []
    with httpx.stream("GET", f"{url}/v1/streams/{stream_id}/events", params={"since": since}, headers=AUTH, timeout=60) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        number = None
        for line in reply.iter_lines():
            if line.startswith("id: "):
                number = int(line[4:])
            elif line.startswith("data: "):
                record = json.loads(line[6:])
                found.append((number, record))
                if record.get("status") in ("done", "error") or len(found) >= limit:
                    break
    return found


def test_create_follow_events_catch_up_and_delete(served):
    url = served.url
    udp = f"udp://127.0.0.1:{free_udp_port()}"
    with Pusher(f"{udp}?pkt_size=1316", seconds=30):
        camera = httpx.post(f"{url}/v1/streams", json={"source": udp}, headers=AUTH, timeout=30)
        assert camera.status_code == 201, camera.text
        camera = camera.json()
        replay = httpx.post(f"{url}/v1/streams", json={"source": "cam.ts"}, headers=AUTH, timeout=30).json()
        # the file stream (2 s at real-time pace) from its first record to its end
        records = events(url, replay["id"])
        assert [n for n, _ in records] == list(range(len(records)))
        clips = [r for _, r in records if "clip" in r]
        assert len(clips) + sum(r.get("dropped", 0) for _, r in records if "from" in r) == 4
        assert all(0 <= r["latency"] < 5 and r["stream"] == replay["id"] for r in clips)
        assert records[-1][1]["status"] == "done"
        # catching up from record 2 gives the same records from there
        assert events(url, replay["id"], since=2) == records[2:]
        with httpx.stream("GET", f"{url}/v1/streams/{replay['id']}/events", headers={**AUTH, "Last-Event-ID": "1"}) as reply:
            numbers = [int(line[4:]) for line in reply.iter_lines() if line.startswith("id: ")]
        assert numbers == [n for n, _ in records[2:]]  # a reconnecting EventSource resumes after the last id it saw
        # the camera ran beside it in the same batch and goes on
        live = events(url, camera["id"], until_done=False, limit=3)
        assert [r["clip"] for _, r in live if "clip" in r]
        listing = httpx.get(f"{url}/v1/streams", headers=AUTH).json()["streams"]
        status = {s["id"]: s["status"] for s in listing}
        assert status[camera["id"]] == "live" and status[replay["id"]] == "ended"
        gone = httpx.delete(f"{url}/v1/streams/{camera['id']}", headers=AUTH)
        assert gone.status_code == 200 and gone.json()["status"] == "stopped"
        assert httpx.delete(f"{url}/v1/streams/{camera['id']}", headers=AUTH).status_code == 409
        assert httpx.get(f"{url}/v1/streams/nope", headers=AUTH).status_code == 404
    metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
    assert "longvid_clips_total" in metrics and 'longvid_latency_seconds_bucket{le="+Inf"}' in metrics
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<html" in page.text and "/v1/streams" in page.text


def test_auth_limits_and_bad_sources_get_4xx_json(served, camera_dir):
    url = served.url
    assert httpx.get(f"{url}/healthz").json()["ok"] is True
    assert httpx.get(f"{url}/v1/streams").status_code == 401
    assert httpx.get(f"{url}/v1/streams", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert httpx.get(f"{url}/metrics").status_code == 401
    refused = {
        "file:///etc/passwd": 403, "concat:/etc/passwd": 403, "/etc/passwd": 403, "../cam.ts": 403, "-": 403,
        "missing.ts": 404, "": 400,
        f"udp://127.0.0.1:{free_udp_port()}": 422,  # nothing sent: the open timeout
    }
    with Pusher(f"udp://127.0.0.1:{(port := free_udp_port())}?pkt_size=1316", seconds=30):
        keep = httpx.post(f"{url}/v1/streams", json={"source": f"udp://127.0.0.1:{port}"}, headers=AUTH, timeout=30).json()
        for source, status in refused.items():
            reply = httpx.post(f"{url}/v1/streams", json={"source": source}, headers=AUTH, timeout=30)
            assert reply.status_code == status, (source, reply.text)
            assert set(reply.json()) == {"error"}
        for body, status in ((b"not json", 400), (b"[1, 2]", 400), (json.dumps({"source": "x" * 4000}).encode(), 413),
                             (json.dumps({"source": "cam.ts", "mode": 1}).encode(), 400)):
            reply = httpx.post(f"{url}/v1/streams", content=body, headers=AUTH)
            assert reply.status_code == status and "error" in reply.json()
        assert httpx.post(f"{url}/v1/streams", json={"source": "cam.ts", "ask": ["what?"]}, headers=AUTH).status_code == 400
        second = httpx.post(f"{url}/v1/streams", json={"source": "cam.ts"}, headers=AUTH, timeout=30)
        full = httpx.post(f"{url}/v1/streams", json={"source": "cam.ts"}, headers=AUTH, timeout=30)
        assert second.status_code == 201 and full.status_code == 429
        ask = httpx.post(f"{url}/v1/streams/{keep['id']}/ask", json={"question": "what?"}, headers=AUTH)
        assert ask.status_code == 400 and "does not answer" in ask.json()["error"]
        # the camera was never disturbed by the bad requests beside it
        records = events(url, keep["id"], until_done=False, limit=6)
        assert not [r for _, r in records if r.get("status") in ("error", "lost")]
        httpx.delete(f"{url}/v1/streams/{keep['id']}", headers=AUTH)
        httpx.delete(f"{url}/v1/streams/{second.json()['id']}", headers=AUTH)


def test_questions_are_answered_from_a_live_stream_memory(camera_dir):
    settings = LiveSettings(clip_frames=4, fps=4.0, size=32, normalize=False, read_timeout=2.0, open_timeout=5.0, capacity=4)
    engine = LiveEngine(longvid.build_model("rewind_tiny"), settings, capacity=2)
    with Running(engine, ServeSettings(allow_dir=str(camera_dir))) as running:
        created = httpx.post(f"{running.url}/v1/streams", json={"source": "cam.ts", "ask": ["what is shown?"], "every": 1.0}, timeout=30)
        assert created.status_code == 201, created.text
        stream_id = created.json()["id"]
        first = events(running.url, stream_id, until_done=False, limit=1)
        asked = httpx.post(f"{running.url}/v1/streams/{stream_id}/ask", json={"question": "and now?"}, timeout=60)
        assert asked.status_code == 200 and isinstance(asked.json()["answer"], str), asked.text
        records = [r for _, r in events(running.url, stream_id)]
        assert first
    answers = [r for r in records if "answer" in r]
    assert {r["question"] for r in answers} == {"what is shown?", "and now?"}
    periodic = [r["time"] for r in answers if r["question"] == "what is shown?"]
    assert periodic[:2] == [1.0, 2.0]  # every 1 s of stream time, and at the end


def _clip(level: float, index: int):
    from longvid.video.live import LiveClip

    frames = torch.full((3, 4, 32, 32), level) + 0.1 * torch.arange(32.0).view(1, 1, 1, 32)
    return LiveClip(frames, index, index * 0.5, index * 0.5 + 0.5, torch.zeros(4, dtype=torch.float64), 4)


def _run_slots(schedule: list[dict[str, float]]) -> dict[str, list[torch.Tensor]]:
    """Step a 3-row stepper through ``schedule`` (per step: {stream name: clip level}); a
    name seen for the first time joins (a free row), a name missing from then on has left."""
    torch.manual_seed(0)
    stepper = BatchedStepper(longvid.build_model("memvit_tiny_recall"), capacity=3)
    rows, outputs, counts = {}, {}, {}
    for step in schedule:
        for name in [n for n in rows if n not in step]:
            stepper.leave(rows.pop(name))
        for name in step:
            if name not in rows:
                rows[name] = stepper.join()
        clips = {rows[n]: _clip(level, counts.get(n, 0)) for n, level in step.items()}
        for name in step:
            counts[name] = counts.get(name, 0) + 1
        result = stepper.step(clips)
        for name in step:
            outputs.setdefault(name, []).append(torch.from_numpy(result[rows[name]]["logits"]))
    return outputs


def test_batched_live_slots_are_isolated_bitwise():
    # "a" watches the same video in both runs; its neighbours watch other things, leave,
    # and a newcomer takes a row another stream used before (its memory must not leak).
    first = _run_slots([{"a": 0.1, "b": 0.5}, {"a": 0.2, "b": 0.6}, {"a": 0.3, "c": 0.9}, {"a": 0.4, "c": 0.8}])
    second = _run_slots([{"a": 0.1, "b": -0.7}, {"a": 0.2, "b": 0.0}, {"a": 0.3, "c": -0.2}, {"a": 0.4, "c": 0.3}])
    assert all(torch.equal(x, y) for x, y in zip(first["a"], second["a"]))
    assert not torch.equal(first["b"][1], second["b"][1])  # the neighbours did see different videos
    # "c" joined a row "b" had used: it sees the same as when it joins a row never used
    fresh = _run_slots([{"a": 0.1, "x": 0.5}, {"a": 0.2, "x": 0.6}, {"a": 0.3, "y": 0.0, "c": 0.9}, {"a": 0.4, "y": 0.0, "c": 0.8}])
    reused = _run_slots([{"a": 0.1, "b": 0.5, "x": 0.5}, {"a": 0.2, "b": 0.6, "x": 0.6}, {"a": 0.3, "y": 0.0, "c": 0.9}, {"a": 0.4, "y": 0.0, "c": 0.8}])
    assert all(torch.equal(x, y) for x, y in zip(fresh["c"], reused["c"]))


def test_a_stepper_with_workers_steps_each_part_as_its_own_batch():
    # 2 workers: the rows of a step go in 2 contiguous parts, each one forward in its own
    # thread; outputs and memory equal each part stepped alone by the model (a naive loop).
    torch.manual_seed(0)
    model = longvid.build_model("memvit_tiny_recall")
    stepper = BatchedStepper(model, capacity=4, workers=2)
    rows = [stepper.join() for _ in range(4)]
    reference = {row: model.init_state(1) for row in rows}  # each row's memory, stepped alone below
    for index, active in enumerate([[0, 1, 2, 3], [1, 3], [0, 1, 2, 3], [2]]):
        clips = {row: _clip(0.1 * (row + 1) + 0.05 * index, index) for row in active}
        result = stepper.step(clips)
        half = (len(active) + 1) // 2
        for part in (active[:half], active[half:]):
            if not part:
                continue
            states = [reference[r] for r in part]
            with torch.inference_mode():
                batch = model.init_state(len(part))
                for i, state in enumerate(states):
                    batch = batch.index_copy(torch.tensor([i]), state)
                clip = torch.stack([clips[r].frames for r in part])
                out, stepped = model(clip, batch)
            for i, row in enumerate(part):
                assert torch.equal(torch.from_numpy(result[row]["logits"]), torch.softmax(out.float(), -1).double()[i])
                reference[row] = stepped.index_select(torch.tensor([i]))
    for row in rows:
        mine, theirs = stepper.row_state(row).state_dict(), reference[row].state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_state_dir_resumes_streams_after_a_restart(tmp_path, camera_dir):
    folder = str(tmp_path / "state")
    os.makedirs(folder)
    model = longvid.build_model("memvit_tiny_recall")
    settings = ServeSettings(allow_dir=str(camera_dir), state_dir=folder, save_every=3600)
    engine = LiveEngine(model, SMALL, capacity=2)
    server = Server(engine, settings)
    server.start()
    stream = engine.add(str(camera_dir / "cam.ts"))
    deadline = time.time() + 30
    while stream.clips < 2 and time.time() < deadline:
        time.sleep(0.05)
    server.shutdown()  # saves every live stream's memory
    saved = load_state(os.path.join(folder, f"{stream.id}.safetensors"))
    meta = json.load(open(os.path.join(folder, f"{stream.id}.json")))
    assert meta["clips"] == stream.clips >= 2 and meta["source"] == str(camera_dir / "cam.ts")

    restarted = LiveEngine(model, SMALL, capacity=2)
    Server(restarted, settings).resume()
    resumed = restarted.get(stream.id)
    assert resumed is not None and resumed.clips == meta["clips"] and resumed.stream_time == meta["stream_time"]
    for key, value in saved.state_dict().items():
        assert torch.equal(restarted.stepper.row_state(resumed.row).state_dict()[key], value)
    restarted.stop_all()


def test_serve_refuses_public_addresses_without_a_token_and_bad_options(capsys, monkeypatch, tmp_path):
    from longvid.cli import main

    monkeypatch.delenv("LONGVID_TOKEN", raising=False)
    for argv, message in ((["--host", "0.0.0.0"], "give a bearer token"), (["--token", "short"], "at least 8 characters"),
                          (["--allow-scheme", "file"], "unknown scheme 'file'"), (["--allow-dir", str(tmp_path / "no")], "no such folder"),
                          (["--max-streams", "0"], "--max-streams must be >= 1"), (["--read-timeout", "0"], "--read-timeout must be > 0"),
                          (["--workers", "0"], "--workers must be >= 1")):
        assert main(["serve", *argv]) == 1
        assert message in capsys.readouterr().err
    assert main(["serve", "--ray"]) == 1
    assert "--ray needs --state-dir" in capsys.readouterr().err
    assert main(["serve", "--model", "rewind_tiny"]) == 1
    assert "needs trained weights" in capsys.readouterr().err
    monkeypatch.setenv("LONGVID_TOKEN", "a-long-enough-token")
    assert main(["serve", "--host", "0.0.0.0", "--max-streams", "0"]) == 1  # the token is taken from the environment
    assert "--max-streams" in capsys.readouterr().err


def test_serve_command_serves_and_stops_on_sigterm(tmp_path, camera_dir):
    port = free_tcp_port()
    log = tmp_path / "serve.txt"
    env = {k: v for k, v in os.environ.items() if k != "LONGVID_TOKEN"}
    state = tmp_path / "state"
    with open(log, "w") as out:
        process = subprocess.Popen([longvid_script(), "serve", "--port", str(port), "--size", "32", "--tau", "2", "--workers", "2",
                                    "--allow-dir", str(camera_dir), "--state-dir", str(state), "--token", TOKEN],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 90
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            created = httpx.post(f"{url}/v1/streams", json={"source": "cam.ts"}, headers=AUTH, timeout=30)
            assert created.status_code == 201, log.read_text()
            udp = f"udp://127.0.0.1:{free_udp_port()}"
            with Pusher(f"{udp}?pkt_size=1316", seconds=30):
                camera = httpx.post(f"{url}/v1/streams", json={"source": udp}, headers=AUTH, timeout=30).json()
                records = events(url, created.json()["id"])
                assert [r for _, r in records if "clip" in r] and records[-1][1]["status"] == "done"
                assert [r for _, r in events(url, camera["id"], until_done=False, limit=2) if "clip" in r]
                process.send_signal(signal.SIGTERM)  # the live camera's memory is saved on the way out
                code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert sorted(os.listdir(state)) == [f"{camera['id']}.json", f"{camera['id']}.safetensors"]
    assert json.load(open(state / f"{camera['id']}.json"))["source"] == udp
    text = log.read_text()
    assert f"serving on http://127.0.0.1:{port}" in text and "Traceback" not in text, text
    assert code in (0, 128 + signal.SIGTERM)

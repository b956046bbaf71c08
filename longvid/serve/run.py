"""Running the server: ``longvid serve`` builds the engine and runs the app under uvicorn."""

from __future__ import annotations

import os

from longvid.errors import LongvidError
from longvid.video.live import NETWORK_SCHEMES

TOKEN_VARIABLE = "LONGVID_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_serve_options(host: str, token: str | None, schemes: list[str], allow_dir: str | None, state_dir: str | None,
                        port: int, max_streams: int) -> None:
    """Every serve option checked before a model loads (a clear one-line error)."""
    if host not in LOOPBACK and not token:
        raise LongvidError(f"--host {host} listens beyond this machine: give a bearer token (--token or {TOKEN_VARIABLE})")
    if token is not None and len(token) < 8:
        raise LongvidError("the token must be at least 8 characters")
    unknown = sorted(set(schemes) - set(NETWORK_SCHEMES))
    if unknown:
        raise LongvidError(f"--allow-scheme: unknown scheme {unknown[0]!r} (known: {', '.join(NETWORK_SCHEMES)})")
    if allow_dir is not None and not os.path.isdir(allow_dir):
        raise LongvidError(f"--allow-dir {allow_dir}: no such folder")
    if state_dir is not None and os.path.exists(state_dir) and not os.path.isdir(state_dir):
        raise LongvidError(f"--state-dir {state_dir}: is a file; give a folder")
    if not 0 <= port <= 65535:
        raise LongvidError(f"--port must be 0..65535, got {port}")
    if max_streams < 1:
        raise LongvidError(f"--max-streams must be >= 1, got {max_streams}")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LongvidError("longvid serve needs FastAPI and uvicorn: pip install 'longvid[serve]'") from None


def serve(engine, settings, host: str = "127.0.0.1", port: int = 8000, log=None) -> None:
    """Serve ``engine`` (a :class:`~longvid.serve.engine.LiveEngine`) until SIGINT/SIGTERM;
    streams' memory is saved to ``settings.state_dir`` on the way out."""
    import uvicorn

    from longvid.serve.app import Server, create_app

    app = create_app(Server(engine, settings))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if log:
        log(f"serving on http://{host if ':' not in host else f'[{host}]'}:{port} "
            f"({engine.stepper.capacity} streams at most{', token required' if settings.token else ''})")
    server.run()

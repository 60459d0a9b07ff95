"""The whole stack on one machine: `taleforge dev`, and the end-to-end tests.

Starts real NATS JetStream and Postgres (embedded, unless URLs are given), runs migrations,
starts the OpenAI and ComfyUI sandboxes (unless a real OpenAI key / ComfyUI URL is given),
then the four services as separate processes, exactly as they run in production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from taleforge.api.settings import DEV_JWT_SECRET
from taleforge.cli.embedded import EmbeddedNats, EmbeddedPostgres, free_port, free_ports
from taleforge.cli.processes import Child, LogSink
from taleforge.cli.trace_sink import TraceSink, dev_telemetry

SERVICES = ("persistence", "narrator", "illustrator", "api")
DURABLE_CONSUMERS = ("persistence", "narrator", "illustrator")


@dataclass
class DevConfig:
    data_dir: Path
    nats_port: int = 4222
    pg_port: int = 54329
    api_port: int = 8000
    openai_port: int = 8100
    comfyui_port: int = 8188
    # External parts: when set, nothing is started in their place.
    nats_url: str | None = None
    database_url: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    comfyui_url: str | None = None
    # Sandbox pacing, so streaming and progress are visible when playing.
    openai_token_delay_ms: int = 25
    openai_first_token_delay_ms: int = 0
    comfyui_render_ms: int = 800
    # API processes behind one database and bus (the first on api_port, others on free ports).
    api_replicas: int = 1
    # Spans to data_dir/traces.jsonl (`taleforge trace`); False: the OpenTelemetry SDK off.
    tracing: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, data_dir: Path) -> DevConfig:
        env = os.environ
        return cls(
            data_dir=data_dir,
            nats_url=env.get("NATS_URL"),
            database_url=env.get("DATABASE_URL"),
            openai_api_key=env.get("OPENAI_API_KEY"),
            openai_base_url=env.get("OPENAI_BASE_URL"),
            comfyui_url=env.get("COMFYUI_URL"),
            api_port=int(env.get("API_PORT", "8000")),
        )

    @classmethod
    def ephemeral(cls, data_dir: Path, **overrides: object) -> DevConfig:
        """Every port picked free: for tests and for several stacks side by side."""
        names = ("nats_port", "pg_port", "api_port", "openai_port", "comfyui_port")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        fields: dict[str, object] = {**ports, **overrides}
        return cls(data_dir=data_dir, **fields)  # type: ignore[arg-type]


class DevStack:
    def __init__(self, config: DevConfig, sink: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.sink = sink or LogSink()
        self.nats: EmbeddedNats | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.children: dict[str, Child] = {}
        self.env: dict[str, str] = {}
        self.api_ports: list[int] = [config.api_port]
        self.restarts: Counter[str] = Counter()  # deliberate restarts (`restart`), per child
        self.trace_sink: TraceSink | None = None

    # -- URLs -----------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"

    @property
    def api_urls(self) -> list[str]:
        """One URL per API replica (children "api", "api-2", ...), in that order."""
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @staticmethod
    def api_name(replica: int) -> str:
        return "api" if replica == 0 else f"api-{replica + 1}"

    @property
    def traces_path(self) -> Path:
        return self.config.data_dir / "traces.jsonl"

    @property
    def nats_url(self) -> str:
        return self.env["NATS_URL"]

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    @property
    def openai_base_url(self) -> str:
        return self.env["OPENAI_BASE_URL"]

    @property
    def comfyui_url(self) -> str:
        return self.env["COMFYUI_URL"]

    # -- life cycle -----------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        logs = cfg.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update({"PYTHONUNBUFFERED": "1", "JWT_SECRET": env.get("JWT_SECRET", DEV_JWT_SECRET)})

        if cfg.nats_url:
            env["NATS_URL"] = cfg.nats_url
        else:
            self.nats = EmbeddedNats(cfg.data_dir / "nats", cfg.nats_port, logs / "nats.log")
            env["NATS_URL"] = self.nats.start()
            self.sink("nats", f"nats-server with JetStream on {env['NATS_URL']}")
        if cfg.database_url:
            env["DATABASE_URL"] = cfg.database_url
        else:
            self.postgres = EmbeddedPostgres(
                cfg.data_dir / "postgres", cfg.pg_port, log_file=logs / "postgres.log"
            )
            env["DATABASE_URL"] = self.postgres.start()
            self.sink("postgres", f"postgres on {env['DATABASE_URL']}")
        self.env = env

        self._migrate()
        self._start_sandboxes()
        env.update(cfg.extra_env)
        self.trace_sink = dev_telemetry(env, self.traces_path, tracing=cfg.tracing)
        env["API_PORT"] = str(cfg.api_port)
        env.setdefault("API_HOST", "127.0.0.1")
        # Migrations just ran, as the one-shot deploy step does; the service need not repeat them.
        env.setdefault("PERSISTENCE_MIGRATE_ON_START", "false")
        self.api_ports = [cfg.api_port] + [free_port() for _ in range(cfg.api_replicas - 1)]
        for name in SERVICES:
            if name != "api":
                self._spawn(name, [sys.executable, "-m", f"taleforge.{name}"])
        for replica, port in enumerate(self.api_ports):
            api = [sys.executable, "-m", "taleforge.api"]
            self._spawn(self.api_name(replica), api, {"API_PORT": str(port)})
        self._wait_ready(timeout)

    def _migrate(self) -> None:
        """Migrations and the STORY stream, before any service starts (a one-shot step)."""
        child = Child(
            "migrate", [sys.executable, "-m", "taleforge.persistence", "migrate"], dict(self.env)
        )
        child.start(self.sink)
        assert child.proc is not None
        if child.proc.wait(120) != 0:
            raise RuntimeError("migrations failed:\n" + "\n".join(child.lines[-30:]))
        child.stop()

    def _start_sandboxes(self) -> None:
        cfg, env = self.config, self.env
        if cfg.openai_api_key:
            env["OPENAI_API_KEY"] = cfg.openai_api_key
            env["OPENAI_BASE_URL"] = cfg.openai_base_url or "https://api.openai.com/v1"
        else:
            self._start_sandbox(
                "openai",
                cfg.openai_port,
                "--token-delay-ms",
                str(cfg.openai_token_delay_ms),
                "--first-token-delay-ms",
                str(cfg.openai_first_token_delay_ms),
            )
            env["OPENAI_BASE_URL"] = cfg.openai_base_url or f"http://127.0.0.1:{cfg.openai_port}/v1"
            env["OPENAI_API_KEY"] = "sk-sandbox"
        if cfg.comfyui_url:
            env["COMFYUI_URL"] = cfg.comfyui_url
        else:
            self._start_sandbox(
                "comfyui", cfg.comfyui_port, "--render-ms", str(cfg.comfyui_render_ms)
            )
            env["COMFYUI_URL"] = f"http://127.0.0.1:{cfg.comfyui_port}"

    def _start_sandbox(self, which: str, port: int, *options: str) -> None:
        module = f"taleforge.sandboxes.{which}"
        sandbox = self._spawn(
            f"{which}-sbx", [sys.executable, "-m", module, "--port", str(port), *options]
        )
        sandbox.wait_for_line("listening on", 30)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, args, {**self.env, **(env or {})})
        child.start(self.sink)
        self.children[name] = child
        return child

    # -- faults (the fault suite) ---------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL one child (a service or a sandbox): no shutdown code runs."""
        child = self.children[name]
        child.signal(signal.SIGKILL)
        if child.proc is not None:
            child.proc.wait(10)

    def restart(self, name: str) -> Child:
        """Start a child again, same command and environment (stopping it first if running)."""
        old = self.children[name]
        old.stop()
        child = Child(name, old.args, old.env)
        child.start(self.sink)
        self.children[name] = child
        self.restarts[name] += 1
        return child

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as http:
            for url in self.api_urls:
                while True:
                    self._check_children()
                    try:
                        if http.get(f"{url}/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the API at {url} did not become ready")
                    time.sleep(0.1)
        asyncio.run(self._wait_for_consumers(deadline))

    async def _wait_for_consumers(self, deadline: float) -> None:
        import nats
        from nats.js.errors import NotFoundError

        from taleforge.contracts import STREAM_NAME

        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            for name in DURABLE_CONSUMERS:
                while True:
                    self._check_children()
                    try:
                        await js.consumer_info(STREAM_NAME, name)
                        break
                    except NotFoundError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"consumer {name} did not appear")
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    def dead_children(self) -> list[str]:
        return [name for name, child in self.children.items() if child.exited]

    def _check_children(self) -> None:
        for name in self.dead_children():
            child = self.children[name]
            assert child.proc is not None
            tail = "\n".join(child.lines[-30:])
            raise RuntimeError(f"{name} exited with code {child.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        # Front door first, so nothing new arrives while the workers drain.
        apis = [self.api_name(replica) for replica in range(len(self.api_ports))]
        order = [*apis, "narrator", "illustrator", "persistence", "openai-sbx", "comfyui-sbx"]
        for name in order + [n for n in self.children if n not in order]:
            child = self.children.get(name)
            if child is not None:
                child.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.trace_sink is not None:
            self.trace_sink.stop()

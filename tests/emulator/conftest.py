"""The emulator app in-process, behind httpx.ASGITransport (no sockets)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orfs.emulator.app import EmulatorConfig, EmulatorState, create_app

KEY = "orfs-test-key-inprocess"


@dataclasses.dataclass
class InProcess:
    """An app, its state and an authenticated client whose base URL is /api/v1/."""

    config: EmulatorConfig
    state: EmulatorState
    client: httpx.AsyncClient

    async def upload(self, filename: str, data: bytes, **params: str) -> httpx.Response:
        return await self.client.post("files", params=params,
                                      files={"file": (filename, data, "application/octet-stream")})

    async def upload_ok(self, filename: str, data: bytes, **params: str) -> dict[str, Any]:
        r = await self.upload(filename, data, **params)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    async def output(self, filename: str, data: bytes, content_type: str = "",
                     **params: str) -> dict[str, Any]:
        part = (filename, data, content_type) if content_type else (filename, data)
        r = await self.client.post("_emulator/outputs", params=params, files={"file": part})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    async def stats(self) -> dict[str, int]:
        r = await self.client.get("_emulator/stats")
        counts: dict[str, int] = r.json()["requests"]
        return counts


MakeEmu = Callable[..., Awaitable[InProcess]]


@pytest.fixture
async def make_emu(tmp_path: Path) -> AsyncIterator[MakeEmu]:
    """``await make_emu(quota=..., fail_rate=..., data_dir=...)``: a fresh in-process emulator."""
    made: list[InProcess] = []

    async def make(**kw: Any) -> InProcess:
        kw.setdefault("data_dir", tmp_path / "data")
        kw.setdefault("api_key", KEY)
        kw.setdefault("rng", random.Random(1234))
        config = EmulatorConfig(**kw)
        app = create_app(config)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://emulator.test/api/v1/",
                                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        emu = InProcess(config, app.state.emulator, client)
        made.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in made:
            await emu.client.aclose()
            emu.state.store.close()


@pytest.fixture
async def emu(make_emu: MakeEmu) -> InProcess:
    return await make_emu()

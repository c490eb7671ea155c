"""The streamed upload of sequential writers (orfs.core.streaming), over the emulator in
process: one request per file, started while the writes still arrive; anything unusual
falls back to the upload at flush, and a cancelled stream never creates a file."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from orfs.api.client import FilesClient
from orfs.api.models import RemoteFile
from orfs.api.upload import UploadBody
from orfs.config import MAX_FILE_SIZE
from orfs.core import errors as ce
from orfs.core.inodes import ROOT_INODE
from orfs.core.streaming import STREAM_AFTER
from orfs.core.upload_stream import CHUNK
from tests.core import harness
from tests.core.harness import env_fixture
from tests.core.harness import records as remote

PIECE = 128 * 1024  # what cp writes


def text(n: int, seed: str = "") -> bytes:
    line = f"{seed}the quick brown fox jumps over the lazy dog 0123456789\n".encode()
    return (line * (n // len(line) + 1))[:n]


class CountingClient(FilesClient):
    """Records, per upload, the body bytes the server had been sent when the flush began."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[dict[str, Any]] = []

    async def upload(self, filename: str, body: UploadBody) -> RemoteFile:
        rec: dict[str, Any] = {"filename": filename, "sent": 0, "size": body.size}
        self.bodies.append(rec)
        opener = body.open

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in opener():
                rec["sent"] += len(chunk)
                yield chunk
        return await super().upload(filename, UploadBody(counted, body.size))


class Env(harness.Env):
    """The core with a counting client, written to in the pieces cp writes."""

    client: CountingClient

    async def create(self, name: str) -> int:
        fh, _ = await self.fs.create(ROOT_INODE, name, 0o644, os.O_WRONLY | os.O_CREAT)
        return int(fh)

    async def write_seq(self, fh: int, data: bytes, start: int = 0) -> None:
        for i in range(0, len(data), PIECE):
            await self.fs.write(fh, start + i, data[i:i + PIECE])

    async def read(self, name: str) -> bytes:
        return await self.read_all(name)


env = env_fixture(Env, client_class=CountingClient, streams=True)
env_off = env_fixture(Env, client_class=CountingClient, streams=True, stream_uploads=False)


async def settle() -> None:
    """Let the stream's task send what is waiting."""
    for _ in range(50):
        await trio.lowlevel.checkpoint()


async def test_sequential_writer_streams_one_upload_while_writing(env: Env) -> None:
    data = text(5 * 1024 * 1024 + 12345)
    fh = await env.create("big.txt")
    await env.write_seq(fh, data)
    await settle()
    # The upload started while the writes arrived, and most bytes are sent before close.
    assert env.fs.streams.started == 1
    assert len(env.client.bodies) == 1 and env.client.bodies[0]["size"] is None
    assert env.client.bodies[0]["sent"] >= len(data) - CHUNK
    await env.close(fh)
    assert env.client.stats()["upload"] == 1
    assert env.fs.streams.completed == 1 and env.fs.streams.cancelled == 0
    files = remote(env.app)
    assert [f.filename for f in files] == ["big.txt"] and files[0].size == len(data)
    assert await env.read("big.txt") == data
    assert env.client.stats()["download"] == 0  # the staged bytes became the cache's


async def test_small_file_uploads_at_flush_with_its_length(env: Env) -> None:
    data = text(STREAM_AFTER - 1)
    fh = await env.create("small.txt")
    await env.write_seq(fh, data)
    await settle()
    assert env.fs.streams.started == 0 and env.client.bodies == []
    await env.close(fh)
    assert [b["size"] for b in env.client.bodies] == [len(data)]
    assert await env.read("small.txt") == data


async def test_empty_file_uploads_nothing(env: Env) -> None:
    fh = await env.create("empty.txt")
    await env.close(fh)
    assert env.client.bodies == [] and remote(env.app) == []


async def test_random_write_cancels_the_stream_and_uploads_at_flush(env: Env) -> None:
    data = bytearray(text(3 * 1024 * 1024))
    fh = await env.create("edit.txt")
    await env.write_seq(fh, bytes(data))
    await settle()
    assert env.fs.streams.started == 1
    await env.fs.write(fh, 10, b"EDITED")        # not at the end: out of order
    data[10:16] = b"EDITED"
    await settle()
    assert env.fs.streams.cancelled == 1
    assert remote(env.app) == []                  # the cancelled request created nothing
    await env.close(fh)
    assert env.client.stats()["upload"] == 2      # the cancelled one, then the flush's
    assert env.client.bodies[-1]["size"] == len(data)
    files = remote(env.app)
    assert len(files) == 1 and files[0].size == len(data)
    assert await env.read("edit.txt") == bytes(data)


async def test_truncate_cancels_the_stream(env: Env) -> None:
    data = text(2 * 1024 * 1024)
    fh = await env.create("trunc.txt")
    await env.write_seq(fh, data)
    await settle()
    ino = (await env.fs.lookup(ROOT_INODE, "trunc.txt")).ino
    await env.fs.setattr(ino, size=1000, fh=fh)
    await settle()
    assert env.fs.streams.cancelled == 1 and remote(env.app) == []
    await env.close(fh)
    assert await env.read("trunc.txt") == data[:1000]
    assert len(remote(env.app)) == 1


async def test_write_past_the_limit_cancels_and_uploads_nothing(env: Env) -> None:
    fh = await env.create("huge.txt")
    await env.write_seq(fh, text(2 * 1024 * 1024))
    await settle()
    assert env.fs.streams.started == 1
    with pytest.raises(ce.FileTooBig):
        await env.fs.write(fh, MAX_FILE_SIZE - 10, b"x" * 20)
    await settle()
    assert env.fs.streams.cancelled == 1
    await env.close(fh)
    assert remote(env.app) == []
    assert env.client.stats()["upload"] == 1      # only the cancelled stream


async def test_rename_while_streaming_uploads_under_the_new_name(env: Env) -> None:
    data = text(2 * 1024 * 1024)
    fh = await env.create("old.txt")
    await env.write_seq(fh, data)
    await settle()
    await env.fs.rename(ROOT_INODE, "old.txt", ROOT_INODE, "new.txt", 0)
    await env.write_seq(fh, data, start=len(data))
    await env.close(fh)
    assert [f.filename for f in remote(env.app)] == ["new.txt"]
    assert await env.read("new.txt") == data + data


async def test_upload_error_of_a_stream_reaches_flush(env: Env) -> None:
    # Binary garbage: the service refuses the type once it has the whole body.
    junk = os.urandom(2 * 1024 * 1024)
    fh = await env.create("junk.bin")
    await env.write_seq(fh, junk)
    await settle()
    assert env.fs.streams.started == 1
    with pytest.raises(ce.Unsupported):
        await env.fs.flush(fh)
    await env.fs.release(fh)
    assert env.client.stats()["upload"] == 1 and remote(env.app) == []
    assert (await env.fs.getxattr((await env.fs.lookup(ROOT_INODE, "junk.bin")).ino,
                                  "user.orfs.state")) == b"failed"


async def test_no_chunked_upload_means_upload_at_flush(env_off: Env) -> None:
    env = env_off
    data = text(3 * 1024 * 1024)
    fh = await env.create("plain.txt")
    await env.write_seq(fh, data)
    await settle()
    assert env.fs.streams.started == 0 and env.client.bodies == []
    await env.close(fh)
    assert [b["size"] for b in env.client.bodies] == [len(data)]
    assert await env.read("plain.txt") == data

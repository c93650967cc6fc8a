"""Plant random secrets and find them again: the secrets (with the encodings a secret can
take when written: plain, URL-encoded, base64, JSON-escaped), readers of everything the
project and Dagster write (files, SQLite rows, Parquet, S3 objects, Redis, QuestDB), a
password-protected private Redis and a PG-wire proxy that lets every planted QuestDB
password log in to the one shared QuestDB."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import secrets
import sqlite3
import subprocess
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq

from tests.services import reachable, unavailable


@dataclass(frozen=True)
class Secret:
    """One planted secret and the configurable place it was planted in."""

    place: str
    value: str

    @classmethod
    def new(cls, place: str) -> Secret:
        # '+' and '/' change under URL-encoding and JSON '\/' escaping, so those
        # encodings are real variants; the hex runs are unique to this secret.
        return cls(place, f"{secrets.token_hex(10)}+{secrets.token_hex(10)}/s")

    @classmethod
    def access_key_id(cls, place: str) -> Secret:
        """An AWS access key id: [A-Z0-9] only ('/' would break the SigV4 credential scope)."""
        return cls(place, "AKIA" + secrets.token_hex(10).upper())

    @property
    def url(self) -> str:
        """The value as it is written in a URL's userinfo."""
        return quote(self.value, safe="")

    def needles(self) -> dict[str, bytes]:
        """encoding -> bytes that any copy of the secret in that encoding contains."""
        raw = self.value.encode()
        found = {
            "plain": raw,
            "url-encoded": self.url.encode(),
            "url-encoded (lower-case hex)": self.url.lower().encode(),
            "json-escaped": json.dumps(self.value)[1:-1].encode(),
            "json-escaped slash": json.dumps(self.value)[1:-1].replace("/", "\\/").encode(),
        }
        # base64 of a longer text holding the secret at any of the 3 byte alignments: the
        # characters that depend on the secret's bytes only.
        for shift in range(3):
            for name, encode in (
                ("base64", base64.b64encode),
                ("base64url", base64.urlsafe_b64encode),
            ):
                text = encode(b"\0" * shift + raw + b"\0\0\0")
                first = 4 if shift else 0
                last = (shift + len(raw)) // 3 * 4
                found[f"{name} (offset {shift})"] = text[first:last]
        unique: dict[bytes, str] = {}
        for encoding, needle in found.items():
            unique.setdefault(needle, encoding)
        return {encoding: needle for needle, encoding in unique.items()}


@dataclass(frozen=True)
class Blob:
    """Something the product or Dagster wrote, and where."""

    where: str
    data: bytes


def leaks(planted: Iterable[Secret], blobs: Iterable[Blob]) -> list[str]:
    """One line per (secret, blob, encoding) found: the place the secret was planted in and
    where it turned up."""
    needles = [(s, enc, n) for s in planted for enc, n in s.needles().items()]
    found = []
    for blob in blobs:
        for secret, encoding, needle in needles:
            if needle in blob.data:
                found.append(f"secret of {secret.place} found ({encoding}) in {blob.where}")
    return sorted(set(found))


# -- readers of what was written -------------------------------------------------------


def _sqlite_values(path: Path) -> Iterator[Blob]:
    """Every value of every table, zlib-compressed ones (Dagster's snapshots) inflated."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    where = f"{path} (table {table})"
                    if isinstance(value, str):
                        yield Blob(where, value.encode())
                    elif isinstance(value, bytes):
                        yield Blob(where, value)
                        with contextlib.suppress(zlib.error):
                            yield Blob(f"{where}, inflated", zlib.decompress(value))


def _parquet_values(where: str, data: bytes) -> Iterator[Blob]:
    table = pq.read_table(io.BytesIO(data))
    yield Blob(f"{where} (parquet schema)", str(table.schema.metadata).encode())
    yield Blob(f"{where} (parquet rows)", table.to_pandas().to_csv().encode())


def file_blobs(root: Path) -> Iterator[Blob]:
    """Every file under root as bytes, every SQLite value, every Parquet row."""
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        yield Blob(str(path), data)
        if data.startswith(b"SQLite format 3"):
            yield from _sqlite_values(path)
        elif path.suffix == ".parquet":
            yield from _parquet_values(str(path), data)


def s3_blobs(endpoint: str, bucket: str, key_id: str, secret_key: str) -> Iterator[Blob]:
    """Every object of the bucket (Parquet decoded too), and its metadata."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret_key,
    )
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            where = f"s3://{bucket}/{item['Key']}"
            yield Blob(f"{where} (key)", item["Key"].encode())
            got = s3.get_object(Bucket=bucket, Key=item["Key"])
            data = got["Body"].read()
            yield Blob(where, data)
            yield Blob(f"{where} (metadata)", json.dumps(got.get("Metadata", {})).encode())
            if item["Key"].endswith(".parquet"):
                yield from _parquet_values(where, data)


def redis_blobs(client: Any) -> Iterator[Blob]:
    """Every key of a Redis (a `redis.Redis`) and its value, read by type."""
    readers = {
        "string": lambda k: [client.get(k)],
        "hash": lambda k: [x for kv in client.hgetall(k).items() for x in kv],
        "list": lambda k: client.lrange(k, 0, -1),
        "set": lambda k: list(client.smembers(k)),
        "zset": lambda k: [m for m, _ in client.zrange(k, 0, -1, withscores=True)],
        "stream": lambda k: [repr(e).encode() for e in client.xrange(k)],
    }
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        yield Blob(f"redis key {key!r} (name)", key)
        for value in readers.get(kind, lambda k: [])(key):
            yield Blob(f"redis key {key!r} ({kind})", value or b"")


def questdb_blobs(dsn: str, prefix: str) -> Iterator[Blob]:
    """The names and every row of the QuestDB tables whose names start with `prefix`."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM tables()")
        names = [r[0] for r in cur.fetchall() if str(r[0]).startswith(prefix)]
        for name in names:
            yield Blob(f"questdb table name {name}", name.encode())
            cur.execute(f'SELECT * FROM "{name}"')
            for row in cur.fetchall():
                yield Blob(f"questdb table {name}", repr(row).encode())


# -- services that accept planted passwords --------------------------------------------


@contextlib.contextmanager
def private_redis(workdir: Path, passwords: list[str]) -> Iterator[int]:
    """A redis-server on a private port whose default user takes each of `passwords`."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(workdir), "--requirepass", passwords[0]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        give_up = time.monotonic() + 10
        while not reachable(("127.0.0.1", port), 0.1):
            if proc.poll() is not None or time.monotonic() > give_up:
                unavailable("redis-server did not start (install it: apt-get install redis-server)")
            time.sleep(0.02)
        admin = redis.Redis(port=port, password=passwords[0])
        admin.execute_command("ACL", "SETUSER", "default", *(f">{p}" for p in passwords[1:]))
        admin.close()
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_UNTYPED_REQUESTS = (80877103, 80877104)  # SSLRequest, GSSENCRequest: the start-up goes on


class PgPasswordProxy:
    """A PG-wire proxy to QuestDB (which asks for a cleartext password): a client logging in
    with one of `passwords` is logged in with QuestDB's real one, so every test place can
    plant a password of its own and still reach the shared server."""

    def __init__(self, upstream: tuple[str, int], real: str, passwords: Iterable[str]) -> None:
        self.upstream, self.real = upstream, real.encode()
        self.passwords = {p.encode() for p in passwords}
        self.logins: Counter[str] = Counter()  # planted password -> logins made with it
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> PgPasswordProxy:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        ).result(10)
        self.server = server
        self.port = int(server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)

        async def client_to_server() -> None:
            while True:  # untyped start-up messages
                head = await client_r.readexactly(4)
                body = await client_r.readexactly(int.from_bytes(head, "big") - 4)
                server_w.write(head + body)
                await server_w.drain()
                if int.from_bytes(body[:4], "big") not in _UNTYPED_REQUESTS:
                    break
            while True:
                kind = await client_r.readexactly(1)
                head = await client_r.readexactly(4)
                body = await client_r.readexactly(int.from_bytes(head, "big") - 4)
                if kind == b"p" and body.rstrip(b"\0") in self.passwords:
                    self.logins[body.rstrip(b"\0").decode()] += 1
                    body = self.real + b"\0"
                    head = (len(body) + 4).to_bytes(4, "big")
                server_w.write(kind + head + body)
                await server_w.drain()

        async def server_to_client() -> None:
            while data := await server_r.read(65536):
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.ensure_future(c) for c in (client_to_server(), server_to_client())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            with contextlib.suppress(Exception):
                writer.close()

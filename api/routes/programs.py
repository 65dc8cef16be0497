"""NC programs: immutable versions with SHA-256, pushes to machines over `cmd/program`, replies.

A push splits the version into chunks (`protocol.split_program`), records one row per chunk with
its request id, then publishes the chunks in order with QoS 1. The machine's replies on
`reply/program` (received by the lifespan's reply loop, :func:`handle_reply`) fill in each chunk
and end the push as `complete` (digest confirmed) or `failed` (the machine's error code).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from api import audit
from api.deps import (
    AnyRole,
    Api,
    Conn,
    MachinePath,
    ProgramAuthors,
    ProgramPushers,
    resolve_machine,
)
from api.errors import (
    AUTHENTICATED,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    error_responses,
)
from protocol import (
    Channel,
    PayloadError,
    ProgramCommand,
    TopicError,
    cmd_topic,
    decode_reply,
    encode,
    parse_topic,
    split_program,
)

__all__ = ["handle_reply", "router"]

router = APIRouter(tags=["programs"], responses=AUTHENTICATED)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
ProgramName = Annotated[str, Path(pattern=_NAME, examples=["O1234"])]
ProgramVersion = Annotated[str, Path(pattern=_VERSION, examples=["3"])]


class ProgramCreate(BaseModel):
    name: Annotated[str, Field(pattern=_NAME)] = Field(examples=["O1234"])
    version: Annotated[str, Field(pattern=_VERSION)] | None = Field(
        default=None, description="Default: one more than the highest numeric version so far"
    )
    content: str = Field(description="The program text, or base64 when encoding is base64")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    comment: Annotated[str, Field(max_length=500)] = ""


class ProgramVersionPublic(BaseModel):
    name: str
    version: str
    sha256: str
    size: int
    comment: str
    created_at: datetime
    created_by: str


class ProgramSummary(BaseModel):
    name: str
    versions: int
    latest_version: str
    updated_at: datetime


class PushCreate(BaseModel):
    name: Annotated[str, Field(pattern=_NAME)]
    version: Annotated[str, Field(pattern=_VERSION)]


class PushPublic(BaseModel):
    id: int
    site: str
    machine: str
    name: str
    version: str
    state: Literal["sent", "complete", "failed"]
    chunk_count: int
    chunks_acknowledged: int
    requested_at: datetime
    requested_by: str
    finished_at: datetime | None
    error_code: str | None
    error_message: str | None


class PushChunk(BaseModel):
    request_id: str
    chunk_index: int
    sent_at: datetime
    replied_at: datetime | None
    ok: bool | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None


class PushDetail(PushPublic):
    chunks: list[PushChunk]


_VERSION_COLUMNS = "name, version, sha256, size, comment, created_at, created_by"


@router.post(
    "/programs",
    status_code=201,
    response_model=ProgramVersionPublic,
    responses=error_responses(409, 413, 422),
)
async def upload(
    principal: ProgramAuthors, api: Api, conn: Conn, body: ProgramCreate
) -> ProgramVersionPublic:
    """Store a new, immutable program version (who and when recorded, SHA-256 computed)."""
    if body.encoding == "base64":
        try:
            content = base64.b64decode(body.content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError("not valid base64 (RFC 4648)", field="content") from exc
    else:
        content = body.content.encode("utf-8")
    if len(content) > api.settings.api_max_program_bytes:
        raise PayloadTooLargeError(
            f"program is {len(content)} bytes; the limit is {api.settings.api_max_program_bytes}",
            field="content",
        )
    digest = hashlib.sha256(content).hexdigest()
    async with conn.transaction():
        # Serialise uploads of one name so that automatic version numbers never race.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('nc_program:' || $1))", body.name)
        version = body.version
        if version is None:
            latest = await conn.fetchval(
                "SELECT max(version::bigint) FROM nc_program "
                "WHERE name = $1 AND version ~ '^[0-9]{1,18}$'",
                body.name,
            )
            version = str((latest or 0) + 1)
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO nc_program
                        (name, version, sha256, size, content, comment, created_by)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_VERSION_COLUMNS}""",  # noqa: S608
                body.name,
                version,
                digest,
                len(content),
                content,
                body.comment,
                principal.who,
            )
        except asyncpg.UniqueViolationError as exc:
            raise ConflictError(
                f"{body.name} version {version} exists; versions are immutable",
                code="program_version_exists",
                field="version",
            ) from exc
        await audit.record(
            conn,
            principal,
            "program.upload",
            None,
            {"name": body.name, "version": version, "sha256": digest},
        )
    assert row is not None
    return ProgramVersionPublic(**dict(row))


@router.get("/programs", response_model=list[ProgramSummary])
async def list_programs(
    _: AnyRole, conn: Conn, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[ProgramSummary]:
    """Every program name with its version count and latest upload."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (name) name, version AS latest_version, created_at AS updated_at,
                  count(*) OVER (PARTITION BY name)::int AS versions
             FROM nc_program ORDER BY name, created_at DESC, version DESC LIMIT $1""",
        limit,
    )
    return [ProgramSummary(**dict(r)) for r in rows]


@router.get(
    "/programs/{name}", response_model=list[ProgramVersionPublic], responses=error_responses(404)
)
async def list_versions(_: AnyRole, conn: Conn, name: ProgramName) -> list[ProgramVersionPublic]:
    """The program's versions, newest first."""
    rows = await conn.fetch(
        f"SELECT {_VERSION_COLUMNS} FROM nc_program WHERE name = $1 "  # noqa: S608
        "ORDER BY created_at DESC, version DESC",
        name,
    )
    if not rows:
        raise NotFoundError(f"no program {name!r}", code="program_not_found", field="name")
    return [ProgramVersionPublic(**dict(r)) for r in rows]


async def _version(conn: Conn, name: str, version: str, columns: str) -> Any:
    row = await conn.fetchrow(
        f"SELECT {columns} FROM nc_program WHERE name = $1 AND version = $2",  # noqa: S608
        name,
        version,
    )
    if row is None:
        raise NotFoundError(
            f"no program {name!r} version {version!r}", code="program_not_found", field="version"
        )
    return row


@router.get(
    "/programs/{name}/versions/{version}",
    response_model=ProgramVersionPublic,
    responses=error_responses(404),
)
async def get_version(
    _: AnyRole, conn: Conn, name: ProgramName, version: ProgramVersion
) -> ProgramVersionPublic:
    """One version's metadata."""
    return ProgramVersionPublic(**dict(await _version(conn, name, version, _VERSION_COLUMNS)))


@router.get(
    "/programs/{name}/versions/{version}/content",
    response_class=Response,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        **error_responses(404),
    },
)
async def get_content(
    _: AnyRole, conn: Conn, name: ProgramName, version: ProgramVersion
) -> Response:
    """The program's bytes, exactly as uploaded."""
    row = await _version(conn, name, version, "content, sha256")
    return Response(
        bytes(row["content"]),
        media_type="application/octet-stream",
        headers={"X-Checksum-SHA256": row["sha256"]},
    )


_PUSH_COLUMNS = """p.id, p.site, p.machine, p.name, p.version, p.state, p.chunk_count,
    p.requested_at, p.requested_by, p.finished_at, p.error_code, p.error_message,
    (SELECT count(*) FROM program_push_chunk c WHERE c.push_id = p.id AND c.ok)::int
        AS chunks_acknowledged"""


@router.post(
    "/machines/{machine}/programs/push",
    status_code=202,
    response_model=PushPublic,
    responses=error_responses(404, 409, 503),
)
async def push(
    principal: ProgramPushers, api: Api, conn: Conn, machine: MachinePath, body: PushCreate
) -> PushPublic:
    """Send a program version to the machine (`cmd/program`); follow it on /program-pushes/{id}."""
    ref = await resolve_machine(conn, principal, machine)
    row = await _version(conn, body.name, body.version, "content")
    if api.broker is None or not api.broker.connected:
        raise UnavailableError("the broker is not connected", code="broker_unavailable")
    chunks = split_program(body.name, body.version, bytes(row["content"]))
    tag = secrets.token_hex(4)
    async with conn.transaction():
        push_id = await conn.fetchval(
            """INSERT INTO program_push (site, machine, name, version, chunk_count, requested_by)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
            ref.site,
            ref.machine,
            body.name,
            body.version,
            len(chunks),
            principal.who,
        )
        request_ids = [f"push{push_id}.{tag}.{c.chunk_index}" for c in chunks]
        await conn.executemany(
            "INSERT INTO program_push_chunk (request_id, push_id, chunk_index) VALUES ($1, $2, $3)",
            [(rid, push_id, c.chunk_index) for rid, c in zip(request_ids, chunks, strict=True)],
        )
        await audit.record(
            conn,
            principal,
            "program.push",
            ref,
            {"push_id": push_id, "name": body.name, "version": body.version},
        )
    topic = cmd_topic(ref.site, ref.machine, "program")
    try:
        for rid, chunk in zip(request_ids, chunks, strict=True):
            command = ProgramCommand(id=rid, ts=datetime.now(UTC), args=chunk)
            await api.broker.publish(topic, encode(command))
            api.metrics.program_chunks.inc()
    except UnavailableError as exc:
        await conn.execute(
            """UPDATE program_push SET state = 'failed', finished_at = now(),
                      error_code = 'broker_unavailable', error_message = $2 WHERE id = $1""",
            push_id,
            exc.message,
        )
        raise
    return await _push(conn, principal, push_id)


async def _push(conn: Conn, principal: Any, push_id: int) -> PushDetail:
    row = await conn.fetchrow(
        f"SELECT {_PUSH_COLUMNS} FROM program_push p WHERE p.id = $1",  # noqa: S608
        push_id,
    )
    if row is None or not principal.may_see(row["site"]):
        raise NotFoundError(f"no program push {push_id}", code="push_not_found")
    chunks = await conn.fetch(
        """SELECT request_id, chunk_index, sent_at, replied_at, ok, result, error
             FROM program_push_chunk WHERE push_id = $1 ORDER BY chunk_index""",
        push_id,
    )
    return PushDetail(**dict(row), chunks=[PushChunk(**dict(c)) for c in chunks])


@router.get(
    "/machines/{machine}/programs/pushes",
    response_model=list[PushPublic],
    responses=error_responses(404, 409),
)
async def list_pushes(
    principal: AnyRole,
    conn: Conn,
    machine: MachinePath,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[PushPublic]:
    """The machine's program pushes, newest first."""
    ref = await resolve_machine(conn, principal, machine)
    rows = await conn.fetch(
        f"""SELECT {_PUSH_COLUMNS} FROM program_push p WHERE p.site = $1 AND p.machine = $2
             ORDER BY p.requested_at DESC, p.id DESC LIMIT $3""",  # noqa: S608
        ref.site,
        ref.machine,
        limit,
    )
    return [PushPublic(**dict(r)) for r in rows]


@router.get("/program-pushes/{push_id}", response_model=PushDetail, responses=error_responses(404))
async def get_push(
    principal: AnyRole, conn: Conn, push_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> PushDetail:
    """One push with every chunk's reply."""
    return await _push(conn, principal, push_id)


async def handle_reply(pool: asyncpg.Pool, topic: str, payload: bytes) -> str:
    """Store a `reply/program` answer; the outcome is stored, unknown, ignored or invalid."""
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return "invalid"
    if parsed.channel is not Channel.REPLY or parsed.command != "program":
        return "ignored"
    try:
        reply = decode_reply(payload)
    except PayloadError:
        return "invalid"
    error = None if reply.error is None else reply.error.model_dump(mode="json")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE program_push_chunk c
                  SET replied_at = now(), ok = $2, result = $3, error = $4
                 FROM program_push p
                WHERE c.request_id = $1 AND p.id = c.push_id AND p.site = $5 AND p.machine = $6
            RETURNING c.push_id""",
            reply.id,
            reply.ok,
            reply.result,
            error,
            parsed.site,
            parsed.machine,
        )
        if row is None:
            return "unknown"
        if not reply.ok:
            assert reply.error is not None
            await conn.execute(
                """UPDATE program_push SET state = 'failed', finished_at = now(),
                          error_code = $2, error_message = $3 WHERE id = $1 AND state = 'sent'""",
                row["push_id"],
                reply.error.code,
                reply.error.message,
            )
        elif (reply.result or {}).get("complete") is True:
            await conn.execute(
                """UPDATE program_push SET state = 'complete', finished_at = now()
                    WHERE id = $1 AND state = 'sent'""",
                row["push_id"],
            )
    return "stored"

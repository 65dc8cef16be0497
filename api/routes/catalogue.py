"""The signal catalogue: every canonical signal's name, channel, type, unit and meaning."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import AnyRole
from api.errors import AUTHENTICATED
from protocol import catalogue_as_dict

__all__ = ["router"]

router = APIRouter(tags=["signals"], responses=AUTHENTICATED)


class MTConnectType(BaseModel):
    type: str
    sub_type: str | None
    category: str


class SignalPublic(BaseModel):
    name: str
    dtype: str
    channel: str
    unit: str | None
    mtconnect: MTConnectType
    component: str
    description: str
    values: list[str] | None


class CataloguePublic(BaseModel):
    version: int
    vendor_signal_pattern: str
    condition_levels: list[str]
    signals: list[SignalPublic]


@router.get("/signals", response_model=CataloguePublic)
async def signals(_: AnyRole) -> CataloguePublic:
    """The catalogue as `protocol.catalogue_as_dict()` gives it (see docs/protocol.md)."""
    return CataloguePublic.model_validate(catalogue_as_dict())

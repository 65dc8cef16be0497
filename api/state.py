"""What the lifespan opens and every request shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from api.config import ApiSettings
from api.fleetlist import FleetList
from api.keycache import KeyCache
from api.metrics import ApiMetrics
from api.mqtt import BrokerLink
from api.ratelimit import RateLimiter
from api.singleflight import SingleFlight
from api.stream import StreamHub

__all__ = ["ApiState"]


@dataclass
class ApiState:
    """The API's resources: built by `api.app`'s lifespan, reached through `api.deps.Api`."""

    settings: ApiSettings
    pool: asyncpg.Pool
    broker: BrokerLink | None
    limiter: RateLimiter
    metrics: ApiMetrics
    stream: StreamHub | None = None
    fleet_list: FleetList | None = None
    key_cache: KeyCache | None = None
    #: the fleet utilisation's answers in flight, by window and scope (api/routes/machines.py)
    fleet_flights: SingleFlight[str] = field(default_factory=SingleFlight)

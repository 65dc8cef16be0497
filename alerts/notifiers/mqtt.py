"""MQTT: the alert, as JSON, on the site's topic `arbor/v1/{site}/alerts` (QoS 1, not retained)."""

from __future__ import annotations

from typing import Protocol

from protocol import alerts_topic

__all__ = ["Publisher", "publish"]


class Publisher(Protocol):
    async def publish(self, topic: str, payload: bytes, timeout_s: float) -> None: ...


async def publish(link: Publisher, site: str, body: bytes, timeout_s: float) -> str:
    """Publish `body` on the site's alert topic and wait for the broker; returns the topic."""
    topic = alerts_topic(site)
    await link.publish(topic, body, timeout_s)
    return topic

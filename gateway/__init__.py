"""Arbor's edge gateway: MTConnect SHDR adapters -> canonical messages -> MQTT.

Pipeline: :mod:`gateway.sources.shdr` (lenient SHDR over TCP) with the device model of
:mod:`gateway.sources.devices` -> :mod:`gateway.pipeline` (normalise, report by exception,
batch) -> :mod:`gateway.buffer` (disk store-and-forward) -> :mod:`gateway.publisher` (MQTT 5,
QoS 1, birth / Last Will) and :mod:`gateway.downlink` (``cmd/*``). Run it with ``arbor gateway``
or ``python -m gateway``; see docs/gateway.md.
"""

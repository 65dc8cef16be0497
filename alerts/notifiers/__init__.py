"""Notifiers: one module per channel, each a small async function with its own deadline.

`webhook.post` (signed JSON over HTTP), `mqtt` (the site alert topic, through the worker's
`MqttLink`) and `email.send` (SMTP). They raise `alerts.errors.DeliveryError` on failure; the
delivery loop (`alerts.delivery`) records the attempt and retries with backoff.
"""

"""Arbor alerts: rules evaluated on the live stream and on stored data, an alert lifecycle kept in
the database, and delivery by webhook, MQTT and e-mail. Run it with `arbor alerts`; docs/alerts.md.
"""

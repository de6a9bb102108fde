"""The bank's events feed two other services through two brokers: see README.md here.

``notifications`` (RabbitMQ) and ``fraud`` (NATS JetStream) each keep their own
read model in their own SQLite file; :func:`examples.bus_services.run.run` runs
the whole thing once.
"""

"""kombu's Redis transport, with one fix for a broker outage.

When the consumer loses Redis, kombu tears the connection down while acks
scheduled by pool threads and the channel's restore-on-close still run. Those
then find `channel.connection` (or its client) gone and raise AttributeError
instead of a connection error, and Celery stops the worker as an
"unrecoverable error". Here they raise redis's ConnectionError, which Celery
and kombu handle: the ack is logged as lost (the job was already claimed in its
record, so a redelivery runs nothing twice) and the consumer reconnects.
"""

from __future__ import annotations

import redis as redis_py
from kombu.transport import redis


class Channel(redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection is None or self.connection.client is None:
            raise redis_py.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(redis.Transport):
    Channel = Channel


def transport_for(url: str) -> str | None:
    """This transport for plain redis:// URLs; kombu's own for anything else."""
    return "jobs.broker:Transport" if url.startswith("redis://") else None

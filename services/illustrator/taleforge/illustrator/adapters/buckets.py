"""NATS KV buckets the illustrator owns: bound when they exist, created on first start."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


async def open_key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Bind to `config.bucket`, creating it with `config` if missing (an existing one is kept)."""
    try:
        return await js.key_value(config.bucket)
    except BucketNotFoundError:
        kv = await js.create_key_value(config)
        log.info("created KV bucket %s", config.bucket)
        return kv

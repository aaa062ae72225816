"""Bus and state: Redis Streams, session logs, agent workers."""

"""Settings of the two outbox processes: the Dapr publisher (``agentia dapr-publish``) and the
webhook dispatcher (``agentia webhooks``). Read from ``AGENTIA_*`` like every other
(agentia/settings.py's ``from_env``); documented in docs/dapr.md and docs/webhooks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentia.settings import Common, SettingsError, dapr_port


@dataclass(slots=True)
class DaprPublishSettings(Common):
    """The Dapr publisher (``agentia dapr-publish``, sessions/dapr_publish.py)."""

    dapr_http_port: int = 0
    """The sidecar's HTTP port; 0 = ``$DAPR_HTTP_PORT``, else 3500 (Dapr's default)."""
    dapr_timeout_s: float = 5.0
    """One publish call's whole time; longer counts as a failure (retried)."""
    dapr_concurrency: int = 32
    """Publish calls in flight at once (per publisher process)."""
    dapr_retry_s: float = 5.0
    """A failed publish is retried once its entry has been pending this long."""
    dapr_sweep_s: float = 30.0
    """A session whose Dapr cursor stays behind its log this long has the missing events
    re-queued from its log (their appender died before queueing them: sessions/webhook_sweep.py)."""

    def validate(self) -> None:
        Common.validate(self)
        if not self.dapr_topic_events:
            raise SettingsError("AGENTIA_DAPR_TOPIC_EVENTS is not set: nothing to publish")
        if not self.dapr_pubsub:
            raise SettingsError("AGENTIA_DAPR_PUBSUB is empty")
        self.dapr_http_port = dapr_port(self.dapr_http_port, "DAPR_HTTP_PORT", 3500)
        if not 1 <= self.dapr_http_port <= 65535:
            raise SettingsError("AGENTIA_DAPR_HTTP_PORT must be a port number")
        if not 0.1 <= self.dapr_timeout_s <= 300 or not 1 <= self.dapr_concurrency <= 4096:
            raise SettingsError("AGENTIA_DAPR_TIMEOUT_S must be 0.1-300 and "
                                "AGENTIA_DAPR_CONCURRENCY 1-4096")
        if not 0.5 <= self.dapr_retry_s <= 3600 or not 0.5 <= self.dapr_sweep_s <= 3600:
            raise SettingsError("AGENTIA_DAPR_RETRY_S and AGENTIA_DAPR_SWEEP_S must be "
                                "between 0.5 and 3600")


@dataclass(slots=True)
class WebhookSettings(Common):
    """The webhook dispatcher (``agentia webhooks``, sessions/webhooks.py)."""

    webhook_secret: str = ""
    """HMAC-SHA256 key of ``X-Agentia-Signature``; at least 16 bytes, required."""
    webhook_timeout_s: float = 5.0
    """One POST's whole time (connect, send, answer); longer counts as a failure."""
    webhook_concurrency: int = 32
    """POSTs in flight at once (per dispatcher process)."""
    webhook_max_attempts: int = 8
    """Attempts of one event before it is dead-lettered."""
    webhook_retry_s: float = 1.0
    """First retry delay; doubles each attempt (+-20 % jitter) up to ``webhook_retry_max_s``."""
    webhook_retry_max_s: float = 300.0
    webhook_max_age_s: float = 86_400.0
    """An event still undelivered this long after it was queued is dead-lettered."""
    webhook_sweep_s: float = 30.0
    """A session whose log stays ahead of its webhook cursor this long has the missing events
    re-queued from its log (their appender died before queueing them: sessions/webhook_sweep.py)."""

    def validate(self) -> None:
        Common.validate(self)
        if not self.webhook_url:
            raise SettingsError("AGENTIA_WEBHOOK_URL is not set: nothing to dispatch")
        if len(self.webhook_secret.encode()) < 16:
            raise SettingsError("AGENTIA_WEBHOOK_SECRET must be at least 16 bytes")
        if not 0.1 <= self.webhook_timeout_s <= 300 or not 1 <= self.webhook_concurrency <= 4096:
            raise SettingsError("AGENTIA_WEBHOOK_TIMEOUT_S must be 0.1-300 and "
                                "AGENTIA_WEBHOOK_CONCURRENCY 1-4096")
        if not 1 <= self.webhook_max_attempts <= 100:
            raise SettingsError("AGENTIA_WEBHOOK_MAX_ATTEMPTS must be between 1 and 100")
        if not 0.01 <= self.webhook_retry_s <= self.webhook_retry_max_s <= 86_400:
            raise SettingsError("need 0.01 <= AGENTIA_WEBHOOK_RETRY_S <= "
                                "AGENTIA_WEBHOOK_RETRY_MAX_S <= 86400")
        if not 1 <= self.webhook_max_age_s <= 30 * 86_400:
            raise SettingsError("AGENTIA_WEBHOOK_MAX_AGE_S must be between 1 and 2592000")
        if not 0.5 <= self.webhook_sweep_s <= 3600:
            raise SettingsError("AGENTIA_WEBHOOK_SWEEP_S must be between 0.5 and 3600")

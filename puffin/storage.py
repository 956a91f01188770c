"""Where files live: local disk or an S3-compatible object store, and how to reach it.

S3 settings are resolved once, on the driver, the way AWS users already configure them
(``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` and the shared
config files), with ``puffin.connect(s3={...})`` on top. The resolved ``S3Config`` travels in
each fragment, so workers on other nodes need no configuration of their own; its secrets are
``Secret`` values that never print.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pyarrow.fs as pafs

from puffin.errors import PuffinError

S3_OPTIONS = ("endpoint_url", "region", "access_key_id", "secret_access_key", "session_token", "profile",
              "max_attempts")


@dataclass(frozen=True)
class Secret:
    """A credential: usable by code, shown to no one (repr, str, logs, EXPLAIN)."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None
    max_attempts: int = 5  # SDK retries of 5xx, throttling and timeouts

    @classmethod
    def resolve(cls, overrides: dict[str, Any] | None = None) -> S3Config:
        o = dict(overrides or {})
        unknown = set(o) - set(S3_OPTIONS)
        if unknown:
            raise PuffinError(f"unknown s3 option(s) {sorted(unknown)}; valid: {', '.join(S3_OPTIONS)}")
        env = os.environ.get
        profile = o.get("profile") or env("AWS_PROFILE")
        key, secret, token = o.get("access_key_id"), o.get("secret_access_key"), o.get("session_token")
        if key is None and secret is None:
            key, secret, token = env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"), token or env("AWS_SESSION_TOKEN")
        if key is None and secret is None:
            key, secret, token = _from_shared_config(profile)
        region = o.get("region") or env("AWS_REGION") or env("AWS_DEFAULT_REGION") or _profile_region(profile)
        return cls(
            endpoint_url=o.get("endpoint_url") or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"),
            region=region or "us-east-1",
            access_key_id=Secret(key) if key else None,
            secret_access_key=Secret(secret) if secret else None,
            session_token=Secret(token) if token else None,
            profile=profile,
            max_attempts=int(o.get("max_attempts", 5)),
        )

    def secrets(self) -> list[str]:
        return [s.value for s in (self.access_key_id, self.secret_access_key, self.session_token) if s]

    def describe(self) -> str:
        """Safe to print: where, not who."""
        creds = "explicit credentials" if self.secret_access_key else "default credential chain"
        return f"s3 endpoint={self.endpoint_url or 'AWS'} region={self.region} ({creds})"


def _from_shared_config(profile: str | None) -> tuple[str | None, str | None, str | None]:
    """Credentials from ~/.aws (profiles, SSO caches...) through botocore, when it is installed."""
    try:
        import botocore.session
    except ImportError:
        return None, None, None
    try:
        creds = botocore.session.Session(profile=profile).get_credentials()
    except Exception:  # noqa: BLE001 - a broken profile means: no shared credentials
        return None, None, None
    if creds is None:
        return None, None, None
    frozen = creds.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


def _profile_region(profile: str | None) -> str | None:
    try:
        import botocore.session

        return botocore.session.Session(profile=profile).get_config_variable("region")
    except Exception:  # noqa: BLE001 - no botocore or no config: no region from it
        return None


def is_s3(location: str) -> bool:
    return location.startswith(("s3://", "s3a://"))


def strip_scheme(location: str) -> str:
    return location.split("://", 1)[1]


@lru_cache(maxsize=16)
def s3_filesystem(config: S3Config) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        "region": config.region,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=config.max_attempts),
        "connect_timeout": 10,
        "request_timeout": 60,
    }
    if config.endpoint_url:
        scheme, _, host = config.endpoint_url.partition("://")
        kwargs["endpoint_override"] = host.rstrip("/") if host else scheme
        kwargs["scheme"] = scheme if host else "https"
    if config.access_key_id and config.secret_access_key:
        kwargs["access_key"] = config.access_key_id.value
        kwargs["secret_key"] = config.secret_access_key.value
        if config.session_token:
            kwargs["session_token"] = config.session_token.value
    return pafs.S3FileSystem(**kwargs)


def scrub(message: str, config: S3Config | None) -> str:
    """The message with any secret of ``config`` masked."""
    for secret in config.secrets() if config else []:
        message = message.replace(secret, "****")
    return message


def is_access_denied(text: str) -> bool:
    """Whether an object-store error's text says the credentials were refused."""
    low = text.lower().replace("_", "")
    return any(k in low for k in ("accessdenied", "access denied", "signaturedoesnotmatch", "invalidaccesskeyid",
                                  "forbidden", "expiredtoken"))


def storage_error(e: Exception, url: str, config: S3Config | None, action: str = "read") -> PuffinError:
    """A clear error naming the URL (never a credential) for a failed object-store call."""
    text = scrub(str(e), config)
    low = text.lower().replace("_", "")
    where = config.describe() if config else "s3"
    if is_access_denied(text):
        return PuffinError(f"access to {url} was denied ({where}); check the credentials: {text}")
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return PuffinError(f"the bucket of {url} does not exist ({where}): {text}")
    if action == "read" and (isinstance(e, FileNotFoundError) or "nosuchkey" in low or "does not exist" in low):
        return PuffinError(f"no object at {url}: {text}")
    return PuffinError(f"cannot {action} {url} ({where}): {text}")


__all__ = ["S3Config", "Secret", "is_access_denied", "is_s3", "s3_filesystem", "scrub", "storage_error"]

"""Settings (CONTRACT §2): environment variables `CARELOOP_*` over an optional TOML file.

A bad value stops start-up with one line naming the key; secrets are `SecretStr` so they never
print in a repr or a log line.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from desk.client_address import parse_networks
from storage.db import DEFAULT_POOL_SIZE

PRIORITY_NAMES = ("P1", "P2", "P3", "P4")  # CONTRACT §5
ENV_PREFIX = "CARELOOP_"
DEFAULT_TOML = Path("careloop.toml")


class SlaTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first_response_minutes: int = Field(gt=0)
    resolution_minutes: int = Field(gt=0)


def _default_sla() -> dict[str, SlaTarget]:
    # The defaults the team promised in the foundation issue; docs/sla.md repeats them.
    return {
        "P1": SlaTarget(first_response_minutes=15, resolution_minutes=4 * 60),
        "P2": SlaTarget(first_response_minutes=60, resolution_minutes=24 * 60),
        "P3": SlaTarget(first_response_minutes=4 * 60, resolution_minutes=72 * 60),
        "P4": SlaTarget(first_response_minutes=24 * 60, resolution_minutes=7 * 24 * 60),
    }


class SlaSettings(BaseModel):
    """Priority × category table: `priorities` is the default row, `categories` overrides cells."""

    model_config = ConfigDict(extra="forbid")
    priorities: dict[str, SlaTarget] = Field(default_factory=_default_sla)
    categories: dict[str, dict[str, SlaTarget]] = Field(default_factory=dict)
    # Remind the assignee when this share of a deadline's window has passed.
    remind_at_fraction: float = Field(default=0.8, gt=0, lt=1)

    @field_validator("priorities")
    @classmethod
    def _every_priority(cls, value: dict[str, SlaTarget]) -> dict[str, SlaTarget]:
        merged = _default_sla() | value
        unknown = set(merged) - set(PRIORITY_NAMES)
        if unknown:
            raise ValueError(f"unknown priority {sorted(unknown)[0]} (use P1..P4)")
        return merged


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", case_sensitive=False, env_nested_delimiter="__"
    )

    database_url: str = "sqlite+aiosqlite:///./careloop.db"
    # PostgreSQL connections each process keeps (storage/db.py DEFAULT_POOL_SIZE says why 24);
    # the server's max_connections must hold this (plus a quarter) times the processes.
    db_pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=2, le=500)
    desk_host: str = "127.0.0.1"
    desk_port: int = Field(default=8080, ge=0, le=65535)
    # Processes answering the desk port (the desk, API, web chat and Telegram webhook), which
    # they share with SO_REUSEPORT: a process uses one core, so one per core. The first runs
    # the rest of its role too; the others are supervised by it (config/processes.py).
    desk_processes: int = Field(default=1, ge=1, le=64)
    # Reverse proxies in front of the desk (comma-separated addresses or networks): only from
    # these is X-Forwarded-For believed, for the login throttle's client address.
    desk_trusted_proxies: str = ""
    secret_key: SecretStr | None = None
    admin_user: str | None = None
    admin_password: SecretStr | None = None

    telegram_token: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_mode: Literal["polling", "webhook"] = "polling"
    # Checked even when unset (validate_default): webhook mode cannot start without it.
    telegram_webhook_url: str | None = Field(default=None, validate_default=True)
    telegram_webhook_secret: SecretStr | None = None

    x_bearer_token: SecretStr | None = None
    x_consumer_key: SecretStr | None = None
    x_consumer_secret: SecretStr | None = None
    x_access_token: SecretStr | None = None
    x_access_token_secret: SecretStr | None = None
    x_api_base: str = "https://api.twitter.com"
    x_poll_seconds: int = Field(default=60, ge=1)
    x_keywords: str | None = None
    x_monthly_budget_usd: float | None = Field(default=None, ge=0)

    mastodon_base_url: str | None = None
    mastodon_token: SecretStr | None = None
    mastodon_poll_seconds: int = Field(default=60, ge=1)

    # Social monitors (docs/monitors.md): triage, grouping, leases, back-off and the X budget.
    monitor_reach_threshold: int = Field(default=10_000, ge=0)
    monitor_group_window_minutes: int = Field(default=1440, ge=1)
    monitor_group_flag_size: int = Field(default=5, ge=2)
    monitor_lease_seconds: int = Field(default=180, ge=10)
    monitor_max_pages: int = Field(default=10, ge=1)
    monitor_backoff_seconds: float = Field(default=5.0, gt=0)
    monitor_backoff_max_seconds: float = Field(default=900.0, gt=0)
    monitor_rate_limit_max_seconds: float = Field(default=900.0, gt=0)
    # The auto-ticket rule: flagged public mentions of these priorities get a ticket at once
    # (comma-separated; empty: only people open tickets from mentions).
    monitor_auto_ticket_priorities: str = "P1"
    # USD per resource read, from X's published pay-per-use prices (docs.x.com, "Pricing"):
    # Posts: Read $0.005, DM Event: Read $0.010.
    x_read_prices_usd: dict[str, float] = Field(
        default_factory=lambda: {"mentions": 0.005, "search": 0.005, "dms": 0.010}
    )

    nlu_backend: Literal["embedded", "rasa"] = "embedded"
    rasa_url: str = "http://127.0.0.1:5005"

    sla: SlaSettings = Field(default_factory=SlaSettings)

    outbox_max_attempts: int = Field(default=8, ge=1)
    outbox_backoff_seconds: float = Field(default=2.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    outbox_batch_size: int = Field(default=50, ge=1, le=1000)
    sla_check_seconds: float = Field(default=30.0, gt=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _async_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must be sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
            )
        return value

    @field_validator("desk_trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        parse_networks(value)  # a typo stops start-up instead of trusting nobody silently
        return value

    @field_validator("desk_processes")
    @classmethod
    def _shared_port(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("desk_port") == 0:
            raise ValueError("several desk processes need a fixed desk_port to share (not 0)")
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _webhook_needs_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        webhook = info.data.get("telegram_mode") == "webhook"
        if webhook and info.data.get("telegram_token") is not None and not value:
            raise ValueError("telegram_mode webhook needs the public https URL Telegram posts to")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// behind a proxy)")
        return value

    @field_validator("monitor_auto_ticket_priorities")
    @classmethod
    def _priorities(cls, value: str) -> str:
        given = [p.strip().upper() for p in value.split(",") if p.strip()]
        wrong = [p for p in given if p not in PRIORITY_NAMES]
        if wrong:
            raise ValueError(f"unknown priority {wrong[0]!r}: P1, P2, P3 or P4, comma-separated")
        return ",".join(given)

    @property
    def auto_ticket_priorities(self) -> tuple[str, ...]:
        return tuple(p for p in self.monitor_auto_ticket_priorities.split(",") if p)

    @field_validator("telegram_api_base", "x_api_base", "rasa_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram_token is not None

    @property
    def x_enabled(self) -> bool:
        return self.x_bearer_token is not None or self.x_access_token is not None

    @property
    def mastodon_enabled(self) -> bool:
        return bool(self.mastodon_base_url and self.mastodon_token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, then the TOML file named by model_config["toml_file"] (if any).
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


class SettingsError(Exception):
    """One line naming the key that is wrong; the CLI prints it and exits 2."""


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    path = Path(config_path) if config_path else (DEFAULT_TOML if DEFAULT_TOML.exists() else None)
    if config_path and not Path(config_path).exists():
        raise SettingsError(f"config file {config_path} does not exist")
    cls = type(
        "_Settings",
        (Settings,),
        {"model_config": Settings.model_config | SettingsConfigDict(toml_file=path)},
    )
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(part) for part in err.get("loc", ())]
    top = loc[0] if loc else "?"
    env_name = ENV_PREFIX + top.upper()
    key = ".".join(loc) if loc else "?"
    where = env_name if env_name in {k.upper() for k in os.environ} else f"{key} ({env_name})"
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden":
        return f"unknown setting {key}"
    return f"bad setting {where}: {msg}"

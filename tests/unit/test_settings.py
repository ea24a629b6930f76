"""Settings: environment over TOML, one clear line for a bad value, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import SettingsError, load_settings


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.database_url == "sqlite+aiosqlite:///./careloop.db"
    assert (s.desk_host, s.desk_port) == ("127.0.0.1", 8080)
    assert s.telegram_api_base == "https://api.telegram.org"
    assert s.telegram_mode == "polling" and s.nlu_backend == "embedded"
    assert s.x_poll_seconds == 60 and s.rasa_url == "http://127.0.0.1:5005"
    assert not s.telegram_enabled and not s.x_enabled and not s.mastodon_enabled


def test_environment_beats_the_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('desk_port = 9000\nx_keywords = "acme"\n[sla.priorities.P1]\n'
                    "first_response_minutes = 5\nresolution_minutes = 60\n")
    monkeypatch.setenv("CARELOOP_DESK_PORT", "9100")
    s = load_settings(toml)
    assert s.desk_port == 9100
    assert s.x_keywords == "acme"
    assert s.sla.priorities["P1"].first_response_minutes == 5
    assert s.sla.priorities["P3"].first_response_minutes == 240  # untouched rows keep defaults


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_TELEGRAM_MODE", "carrier-pigeon")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "CARELOOP_TELEGRAM_MODE" in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unknown_toml_key_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("desk_prot = 1\n")
    with pytest.raises(SettingsError, match="desk_prot"):
        load_settings(toml)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_TELEGRAM_TOKEN", "123456:SECRET-TOKEN")
    monkeypatch.setenv("CARELOOP_ADMIN_PASSWORD", "hunter2hunter2")
    s = load_settings()
    assert "SECRET-TOKEN" not in repr(s) and "hunter2" not in str(s)
    assert s.telegram_token is not None
    assert s.telegram_token.get_secret_value() == "123456:SECRET-TOKEN"


def test_a_non_async_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", "mysql://root@localhost/x")
    with pytest.raises(SettingsError, match="CARELOOP_DATABASE_URL"):
        load_settings()


def test_the_example_file_is_valid_and_complete() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "careloop.example.toml"
    s = load_settings(example)
    text = example.read_text()
    for name in type(s).model_fields:
        assert name in text, f"{name} is not documented in careloop.example.toml"


async def test_the_pool_size_reaches_the_postgresql_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.bootstrap import build_service

    monkeypatch.setenv("CARELOOP_DATABASE_URL", "postgresql+asyncpg://careloop@db-host/careloop")
    monkeypatch.setenv("CARELOOP_DB_POOL_SIZE", "40")
    service = build_service(load_settings())
    try:
        pool = service.store.engine.pool
        assert pool.size() == 40  # type: ignore[attr-defined]
    finally:
        await service.store.close()
    monkeypatch.setenv("CARELOOP_DB_POOL_SIZE", "1")
    with pytest.raises(SettingsError, match="CARELOOP_DB_POOL_SIZE"):
        load_settings()


def test_several_desk_processes_need_a_port_to_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DESK_PROCESSES", "2")
    assert load_settings().desk_processes == 2
    monkeypatch.setenv("CARELOOP_DESK_PORT", "0")
    with pytest.raises(SettingsError, match=r"CARELOOP_DESK_PROCESSES.*fixed desk_port"):
        load_settings()


def test_webhook_mode_without_its_url_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from config.cli import main

    monkeypatch.setenv("CARELOOP_TELEGRAM_MODE", "webhook")
    assert load_settings().telegram_mode == "webhook"  # no token: Telegram is off, no URL needed
    monkeypatch.setenv("CARELOOP_TELEGRAM_TOKEN", "123456:SECRET-TOKEN")
    with pytest.raises(SettingsError, match=r"CARELOOP_TELEGRAM_WEBHOOK_URL.*public https URL"):
        load_settings()
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CARELOOP_TELEGRAM_WEBHOOK_URL" in err
    assert "SECRET-TOKEN" not in err
    monkeypatch.setenv("CARELOOP_TELEGRAM_WEBHOOK_URL", "https://care.example.com/telegram/hook")
    assert load_settings().telegram_webhook_url == "https://care.example.com/telegram/hook"


@pytest.mark.parametrize("argv", [
    ["--config", "{toml}", "db", "upgrade"],
    ["db", "upgrade", "--config", "{toml}"],
    ["agents", "token", "nobody", "--config", "{toml}"],
    ["nlu", "parse", "--config", "{toml}"],
])
def test_config_is_taken_before_or_after_the_command(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from config.cli import main

    toml = tmp_path / "c.toml"
    toml.write_text('log_level = "LOUD"\n')  # a bad value shows the file was read
    assert main([a.format(toml=toml) for a in argv]) == 2
    assert "log_level" in capsys.readouterr().err


def test_auto_ticket_priorities_are_checked_and_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().auto_ticket_priorities == ("P1",)
    monkeypatch.setenv("CARELOOP_MONITOR_AUTO_TICKET_PRIORITIES", " p1, P2 ")
    assert load_settings().auto_ticket_priorities == ("P1", "P2")
    monkeypatch.setenv("CARELOOP_MONITOR_AUTO_TICKET_PRIORITIES", "")
    assert load_settings().auto_ticket_priorities == ()
    monkeypatch.setenv("CARELOOP_MONITOR_AUTO_TICKET_PRIORITIES", "P1,P5")
    with pytest.raises(SettingsError, match=r"CARELOOP_MONITOR_AUTO_TICKET_PRIORITIES.*'P5'"):
        load_settings()


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DESK_TRUSTED_PROXIES", "10.0.0.5, 10.1.0.0/16, ::1")
    assert load_settings().desk_trusted_proxies == "10.0.0.5, 10.1.0.0/16, ::1"
    monkeypatch.setenv("CARELOOP_DESK_TRUSTED_PROXIES", "10.0.0.5, proxy.internal")
    with pytest.raises(SettingsError, match=r"CARELOOP_DESK_TRUSTED_PROXIES.*not an IP"):
        load_settings()

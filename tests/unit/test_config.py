from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import ConfigError


def test_defaults_load() -> None:
    settings = load_settings()
    assert settings.database.url.startswith("sqlite+aiosqlite")
    assert "sg" in settings.regions


def test_unknown_keys_are_rejected_with_their_path(tmp_path: Path) -> None:
    cfg = tmp_path / "camgate.toml"
    cfg.write_text("[http]\nprot = 8080\n")
    with pytest.raises(ConfigError, match=r"http\.prot: Extra inputs are not permitted"):
        load_settings(cfg)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "camgate.toml"
    cfg.write_text("[http]\nport = 8081\n")
    monkeypatch.setenv("CAMGATE_HTTP__PORT", "9090")
    assert load_settings(cfg).http.port == 9090


def test_unknown_environment_key_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMGATE_HTTP__PROT", "9090")
    with pytest.raises(ConfigError, match="prot"):
        load_settings()


def test_every_problem_is_listed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(http={"port": "x"}, database={"pool_size": 0})
    assert "http.port" in str(info.value) and "database.pool_size" in str(info.value)


def test_production_needs_a_secret_key() -> None:
    with pytest.raises(ConfigError, match="secret_key must be set in production"):
        load_settings(environment="production")
    with pytest.raises(ConfigError, match="at least 32"):
        load_settings(security={"secret_key": "short"})


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(bad)


def test_the_shipped_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parents[2] / "deploy" / "camgate.example.toml"
    with pytest.raises(ConfigError, match=r"mqtt\.password must be set in production"):
        load_settings(example, security={"secret_key": "x" * 40})
    # secrets come from the environment, as the example says
    monkeypatch.setenv("CAMGATE_SECURITY__SECRET_KEY", "x" * 40)
    monkeypatch.setenv("CAMGATE_MQTT__PASSWORD", "a-long-random-broker-password")
    settings = load_settings(example)
    assert settings.environment == "production" and settings.notify.smtp is not None
    assert settings.broker.gateways[0].username == settings.mqtt.username

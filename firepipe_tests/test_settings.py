from pathlib import Path

import dagster as dg
import pytest

from firepipe import settings
from firepipe.lib.instance import FirepipeInstance


def test_defaults_are_local_and_dot_firepipe_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FIREPIPE_ENV", raising=False)
    monkeypatch.delenv("FIREPIPE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert settings.environment() is settings.Environment.LOCAL
    paths = settings.local_paths()
    assert paths.home == tmp_path / ".firepipe"
    assert paths.dagster_home == tmp_path / ".firepipe" / "dagster"
    assert paths.lake == tmp_path / ".firepipe" / "lake"


def test_home_and_environment_are_read_at_call_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path / "a"))
    monkeypatch.setenv("FIREPIPE_ENV", " AWS ")
    assert settings.local_paths().home == tmp_path / "a"
    assert settings.environment() is settings.Environment.AWS
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path / "b"))
    assert settings.local_paths().lake == tmp_path / "b" / "lake"


def test_the_instance_config_turns_on_run_monitoring(tmp_path: Path) -> None:
    home = settings.ensure_dagster_home(settings.LocalPaths(home=tmp_path))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance, FirepipeInstance)
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_cancel_timeout_seconds == 180
        assert instance.run_monitoring_max_runtime_seconds == 86400
        assert instance.run_monitoring_poll_interval_seconds == 60
        assert instance.get_settings("telemetry") == {"enabled": False}


def test_an_older_config_gets_run_monitoring_and_the_instance_class_and_keeps_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path))
    home = settings.ensure_dagster_home()
    older = "# mine\ntelemetry:\n  enabled: false\npython_logs:\n  python_log_level: DEBUG"
    (home / "dagster.yaml").write_text(older)
    settings.ensure_dagster_home()
    merged = (home / "dagster.yaml").read_text()
    assert merged.startswith(older + "\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert isinstance(instance, FirepipeInstance)
        assert instance.python_log_level == "DEBUG"
    settings.ensure_dagster_home()
    assert (home / "dagster.yaml").read_text() == merged  # added once


def test_a_users_own_run_monitoring_block_is_kept(tmp_path: Path) -> None:
    paths = settings.LocalPaths(home=tmp_path)
    config = settings.ensure_dagster_home(paths) / "dagster.yaml"
    config.write_text("run_monitoring:\n  enabled: false\n")
    settings.ensure_dagster_home(paths)
    assert config.read_text().startswith("run_monitoring:\n  enabled: false\ninstance_class:")
    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        assert not instance.run_monitoring_enabled
        assert isinstance(instance, FirepipeInstance)
    config.write_text("- not\n- a mapping\n")
    with pytest.raises(settings.SettingsError, match="YAML mapping"):
        settings.ensure_dagster_home(paths)

from pathlib import Path

import pytest

from firepipe import settings


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


def test_ensure_dagster_home_keeps_an_existing_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path))
    home = settings.ensure_dagster_home()
    (home / "dagster.yaml").write_text("# mine\n")
    settings.ensure_dagster_home()
    assert (home / "dagster.yaml").read_text() == "# mine\n"

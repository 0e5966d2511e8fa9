"""Settings are validated at start: a bad value exits 2 with one line naming it, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convhub.server.config import Settings, SettingsError, env_name, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"

# (variable, bad value, words the message must contain besides the variable's name)
BAD_ENVIRONMENT = [
    ("CONVHUB_DB_WORKERS", "abc", "integer"),
    ("CONVHUB_DB_WORKERS", "0", "greater than or equal to 1"),
    ("CONVHUB_DEFAULT_REGION", "XX", "unknown region"),
    ("CONVHUB_LOG_LEVEL", "LOUD", "unknown log level"),
    ("CONVHUB_LOG_FORMAT", "xml", "'text' or 'json'"),
    ("CONVHUB_SHUTDOWN_GRACE", "-1", "greater than or equal to 0"),
    ("CONVHUB_SHUTDOWN_GRACE", "nan", "finite"),
    ("CONVHUB_MAX_BODY_BYTES", "0", "greater than or equal to 1"),
    ("CONVHUB_GRPC_ADDRESS", "no-port-here", "HOST:PORT"),
    ("CONVHUB_HTTP_ADDRESS", "127.0.0.1:99999", "HOST:PORT"),
    ("CONVHUB_METRICS", "maybe", "boolean"),
    ("CONVHUB_ACCESS_LOG", "sometimes", "boolean"),
    ("CONVHUB_DATABASE_URL", "mysql://app:hunter2@db/app", "unsupported database"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:4318", "http(s) URL"),
]


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVHUB_", "OTEL_"))}
    return {**env, "CONVHUB_DATA_DIR": str(tmp_path), **extra}


def _run_all(commands: list[tuple[list[str], dict[str, str]]]) -> list[tuple[int, str]]:
    """Run CLI invocations side by side (each exits at once when its settings are bad)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "convhub.server.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, env in commands
    ]
    results = []
    for proc in procs:
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # it started serving: the bad value was accepted
            proc.kill()
            _, stderr = proc.communicate()
        results.append((proc.returncode, stderr))
    return results


def test_bad_environment_values_exit_2_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    commands = [(["serve"], _clean_env(tmp_path, **{var: value})) for var, value, _ in BAD_ENVIRONMENT]
    results = _run_all(commands)
    for (var, value, words), (code, stderr) in zip(BAD_ENVIRONMENT, results, strict=True):
        assert code == 2, (var, value, stderr)
        assert "Traceback" not in stderr, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"convhub: {var}: "), (var, stderr)
        assert words in lines[0], (var, stderr)
    assert not any("hunter2" in stderr for _, stderr in results), "a database password was echoed"


def test_every_command_validates_its_settings(tmp_path: Path) -> None:
    env = _clean_env(tmp_path, CONVHUB_DB_WORKERS="abc")
    commands = [(args, env) for args in (["migrate"], ["customer", "list"], ["token", "create", "--customer", "x"])]
    commands.append((["health"], env))
    for code, stderr in _run_all(commands):
        assert code == 2 and "CONVHUB_DB_WORKERS" in stderr and "Traceback" not in stderr, stderr


def test_command_line_overrides_are_validated_and_named_by_their_flag(tmp_path: Path) -> None:
    commands = [
        (["serve", "--grpc-address", "127.0.0.1"], _clean_env(tmp_path)),
        (["serve", "--http-address", "[::1]:port"], _clean_env(tmp_path)),
        (["--database-url", "not a url", "migrate"], _clean_env(tmp_path)),
    ]
    names = ["--grpc-address (CONVHUB_GRPC_ADDRESS)", "--http-address (CONVHUB_HTTP_ADDRESS)", "--database-url"]
    for name, (code, stderr) in zip(names, _run_all(commands), strict=True):
        assert code == 2 and f"convhub: {name}" in stderr and "Traceback" not in stderr, stderr


def test_good_values_are_parsed_and_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [k for k in os.environ if k.startswith(("CONVHUB_", "OTEL_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("CONVHUB_DEFAULT_REGION", "gb")
    monkeypatch.setenv("CONVHUB_LOG_LEVEL", "debug")
    monkeypatch.setenv("CONVHUB_METRICS", "false")
    monkeypatch.setenv("CONVHUB_ACCESS_LOG", "0")
    monkeypatch.setenv("CONVHUB_DB_WORKERS", "3")
    monkeypatch.setenv("CONVHUB_HTTP_ADDRESS", "")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    settings = load_settings({"grpc_address": "[::1]:0"})
    assert (settings.default_region, settings.log_level, settings.log_level_number) == ("GB", "DEBUG", 10)
    assert (settings.metrics, settings.access_log, settings.db_workers) == (False, False, 3)
    assert settings.http_address == "" and settings.grpc_address == "[::1]:0"
    assert settings.otel_exporter_otlp_endpoint == "http://127.0.0.1:4318"
    with pytest.raises(SettingsError, match="CONVHUB_DB_WORKERS"):
        load_settings({"db_workers": 0})


def test_every_setting_is_documented_in_the_readme_configuration_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README.read_text(), flags=re.MULTILINE))
    expected = {env_name(name) for name in Settings.model_fields}
    assert expected <= documented, f"missing from README: {sorted(expected - documented)}"

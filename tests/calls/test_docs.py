"""README.md and .env.example document every setting that voicebot/settings.py reads."""

from __future__ import annotations

import re
from pathlib import Path

import environ

ROOT = Path(__file__).resolve().parents[2]


def setting_names() -> set[str]:
    source = (ROOT / "voicebot" / "settings.py").read_text()
    return set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', source))


def test_settings_are_found():
    assert {
        "PUBLIC_BASE_URL",
        "TWILIO_AUTH_TOKEN",
        "DIAL_ALLOWED_DESTINATIONS",
        "DEFAULT_GREETING",
    } <= setting_names()


def test_readme_configuration_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = sorted(name for name in setting_names() if f"| `{name}` |" not in table)
    assert missing == []


def test_env_example_lists_every_setting_and_parses_when_uncommented(tmp_path, monkeypatch):
    lines = (ROOT / ".env.example").read_text().splitlines()
    listed = {m.group(1) for line in lines if (m := re.match(r"^# ([A-Z][A-Z0-9_]*)=", line))}
    assert sorted(setting_names() - listed) == []
    # Uncommented, each literal default must read back exactly: django-environ keeps inline
    # comments as part of the value, so none may follow a value.
    defaults = [line[2:] for line in lines if re.match(r"^# [A-Z][A-Z0-9_]*=[^<]*$", line)]
    (tmp_path / ".env").write_text("\n".join(defaults) + "\n")
    parsed: dict[str, str] = {}
    monkeypatch.setattr(environ.Env, "ENVIRON", parsed)
    environ.Env.read_env(str(tmp_path / ".env"), overwrite=True)
    assert parsed == dict(line.split("=", 1) for line in defaults)
    assert [key for key, value in parsed.items() if re.search(r"\s#", value)] == []
    assert parsed["CARRIER"] == "auto" and parsed["TWILIO_FROM_NUMBER"] == "+15005550006"

"""Every setting is documented: each config key appears in the README's reference tables."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from connectors import registry
from engine.config import SECTIONS

README = (Path(__file__).parent.parent / "README.md").read_text()


@pytest.mark.parametrize(
    ("section", "struct"),
    [
        *(("databases", registry.settings_type(name)) for name in registry.names()),
        *SECTIONS.items(),
    ],
)
def test_every_setting_is_documented(section: str, struct: type[msgspec.Struct]) -> None:
    heading = f"### `{section}`"
    assert heading in README, f"README has no {heading} section"
    body = README.split(heading, 1)[1].split("\n### ", 1)[0]
    missing = [f.name for f in msgspec.structs.fields(struct) if f"`{f.name}`" not in body]
    assert not missing, f"undocumented {section} settings: {missing}"

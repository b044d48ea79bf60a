"""Regression tests for defects found in the independent review.

Each test fails without the fix it names and passes with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.pop3mon.config import ConfigError, load_targets

TARGETS = """\
version: 1
servers:
  - name: mail1
    host: mail1.example
    tags: [{tag}]
    account: {{username: monitor, password_env: REVIEW_PW}}
    connections:
      - security: tls
"""


# -- config: tags that are pytest's own markers change test outcomes ---------------------
@pytest.mark.parametrize("tag", ["xfail", "skip", "skipif", "tls", "auth", "not"])
def test_reserved_marker_names_are_not_tags(tag: str, tmp_path: Path) -> None:
    """A tag "xfail" turned every CRIT of its connection type into XFAIL (exit status 0);
    "skip" skipped the connection type without probing it; "tls" made `-m tls` select all
    its tiers. Such tags must be refused at load time, with file and line."""
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.format(tag=tag), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    text = str(info.value)
    assert "targets.yaml:5:" in text and "cannot be a tag" in text


def test_ordinary_tags_still_load(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.format(tag="production"), encoding="utf-8")
    assert load_targets(path).connections[0].tags == ("production",)

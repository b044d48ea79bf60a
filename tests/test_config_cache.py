"""The plugin mode's cache of validated targets files (pop3mon.config.cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pop3mon.config import ConfigError, load_targets
from pop3mon.config.cache import cache_dir, load_targets_cached

from pop3mon_lab.certs import LabCerts

REPO = Path(__file__).resolve().parents[1]
SECRET = "cache-sentinel-Zq8yW2"

TARGETS = """\
version: 1
servers:
  - name: mail
    host: mail.example
    account: {username: probe, password_env: CACHE_TEST_PW}
    connections:
      - {id: one, port: 995, security: tls, auth: plain}
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"POP3MON_CACHE_DIR": str(tmp_path / "cache")}


def _entries(env: dict[str, str]) -> list[Path]:
    directory = cache_dir(env)
    assert directory is not None
    return sorted(directory.glob("targets-*.pickle")) if directory.exists() else []


def test_a_second_load_is_answered_from_the_cache(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS, encoding="utf-8")
    first = load_targets_cached(path, env)
    assert first == load_targets(path)
    [entry] = _entries(env)
    assert entry.stat().st_mode & 0o777 == 0o600
    assert (entry.parent.stat().st_mode & 0o777) == 0o700
    # An entry holds references, never a secret value, even with the variable set.
    os.environ["CACHE_TEST_PW"] = SECRET
    try:
        load_targets_cached(path, env)
    finally:
        del os.environ["CACHE_TEST_PW"]
    assert SECRET.encode() not in entry.read_bytes()
    # A hit imports neither the validator (pydantic) nor the YAML parser.
    code = (
        "import sys; from pop3mon.config.cache import load_targets_cached as L; "
        f"t = L({str(path)!r}); "
        "print(t.ids, 'pydantic' in sys.modules, 'yaml' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "PYTHONPATH": str(REPO / "plugins")},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path.cwd(),
    ).stdout
    assert out.strip() == "('one',) False False", out


def test_a_changed_file_is_validated_again(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS, encoding="utf-8")
    assert load_targets_cached(path, env).ids == ("one",)
    path.write_text(TARGETS.replace("id: one", "id: two"), encoding="utf-8")
    assert load_targets_cached(path, env).ids == ("two",)
    # A broken file is worded by the validator exactly as without the cache.
    path.write_text(TARGETS.replace("security: tls", "security: tsl"), encoding="utf-8")
    with pytest.raises(ConfigError) as cached:
        load_targets_cached(path, env)
    with pytest.raises(ConfigError) as plain:
        load_targets(path)
    assert cached.value.problems == plain.value.problems
    assert len(_entries(env)) == 2  # the broken file left no entry


def test_entries_nobody_else_controls(tmp_path: Path, env: dict[str, str]) -> None:
    """A corrupt entry, or a directory others may write to, means loading without the
    cache, never a failed check and never reading what another user could have put there."""
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS, encoding="utf-8")
    load_targets_cached(path, env)
    [entry] = _entries(env)
    entry.write_bytes(b"not a pickle")
    assert load_targets_cached(path, env).ids == ("one",)
    assert entry.read_bytes() != b"not a pickle"  # rewritten by the miss

    # A forged entry (a pickle that would run code) in a directory others may write to is
    # never loaded.
    marker = tmp_path / "ran"
    forged = (
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )  # pickle protocol 0: os.system("touch ...")
    entry.write_bytes(forged)
    entry.parent.chmod(0o777)
    assert load_targets_cached(path, env).ids == ("one",)
    assert not marker.exists()
    assert entry.read_bytes() == forged  # and nothing is written there either


def test_the_cache_can_be_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS, encoding="utf-8")
    assert cache_dir({"POP3MON_CACHE_DIR": ""}) is None
    assert load_targets_cached(path, {"POP3MON_CACHE_DIR": ""}).ids == ("one",)
    assert cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/pop3mon")
    assert cache_dir({"HOME": "/h"}) == Path("/h/.cache/pop3mon")


def test_a_changed_ca_file_is_validated_again(
    tmp_path: Path, env: dict[str, str], lab_certs: LabCerts
) -> None:
    """The validator reads ca_file too: a CA bundle broken after the entry was written is
    the config error it is without the cache (plugin mode: UNKNOWN), not a CRIT handshake
    blamed on the server."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(lab_certs.ca_file.read_bytes())
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.replace("    account:", "    ca_file: ca.pem\n    account:"))
    assert load_targets_cached(path, env).ids == ("one",)
    assert load_targets_cached(path, env).ids == ("one",)  # a hit
    ca.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as cached:
        load_targets_cached(path, env)
    with pytest.raises(ConfigError) as plain:
        load_targets(path)
    assert cached.value.problems == plain.value.problems
    ca.unlink()
    with pytest.raises(ConfigError):
        load_targets_cached(path, env)


def test_a_retargeted_symlink_is_validated_again(
    tmp_path: Path, env: dict[str, str], lab_certs: LabCerts
) -> None:
    """A deployment that swaps a symlink to another release directory: the same bytes
    there mean other relative paths (ca_file), so the entry of the old target is not used."""
    for release in ("r1", "r2"):
        (tmp_path / release).mkdir()
        (tmp_path / release / "targets.yaml").write_text(
            TARGETS.replace("    account:", "    ca_file: ca.pem\n    account:")
        )
        (tmp_path / release / "ca.pem").write_bytes(lab_certs.ca_file.read_bytes())
    link = tmp_path / "targets.yaml"
    link.symlink_to(tmp_path / "r1" / "targets.yaml")
    first = load_targets_cached(link, env)
    assert first.connections[0].ca_file == str(tmp_path / "r1" / "ca.pem")
    link.unlink()
    link.symlink_to(tmp_path / "r2" / "targets.yaml")
    second = load_targets_cached(link, env)
    assert second.connections[0].ca_file == str(tmp_path / "r2" / "ca.pem")
    assert second == load_targets(link)


def test_an_upgraded_validator_library_is_a_miss(tmp_path: Path, env: dict[str, str]) -> None:
    """A new PyYAML (or pydantic) may read the same file differently: once it is installed
    anew, the entries the old one made are not used. The library is a real copy of the
    installed PyYAML, "upgraded" as pip leaves it: another version's dist-info beside it."""
    import shutil

    import yaml

    shadow = tmp_path / "site"
    shutil.copytree(Path(yaml.__file__).parent, shadow / "yaml")
    (shadow / "PyYAML-6.0.3.dist-info").mkdir()
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS, encoding="utf-8")
    code = (
        "import sys; from pop3mon.config.cache import load_targets_cached as L; "
        f"print(L({str(path)!r}).ids, 'yaml' in sys.modules, sys.modules.get('yaml') and "
        "sys.modules['yaml'].__file__)"
    )

    def load() -> str:
        return subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env, "PYTHONPATH": f"{shadow}{os.pathsep}{REPO / 'plugins'}"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert load() == f"('one',) True {shadow / 'yaml' / '__init__.py'}"  # validated
    assert load() == "('one',) False None"  # a hit: PyYAML not even imported
    assert len(_entries(env)) == 1
    # What pip leaves of an upgrade: the new version's record beside the package.
    (shadow / "PyYAML-6.0.3.dist-info").rename(shadow / "pyyaml-6.0.4.dist-info")
    init = shadow / "yaml" / "__init__.py"
    assert load() == f"('one',) True {init}"  # validated again with the new one
    assert len(_entries(env)) == 2

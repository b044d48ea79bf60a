"""Real Dovecot that wants TLS before a login: ``disable_plaintext_auth = yes`` (its default).

Dovecot counts a client as secured when its address equals the server's, so on 127.0.0.1 it
never refuses plaintext logins. This lab adds a listener on 127.0.0.2: the client connects
from 127.0.0.1, Dovecot sees a remote, insecure client and behaves as on a real network --
CAPA before TLS lists STLS and SASL CRAM-MD5/SCRAM but neither USER nor PLAIN/LOGIN, and
``USER`` is answered ``-ERR [AUTH] Plaintext authentication disallowed ...``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pop3mon.engine import ProbeResult, ProbeSpec, probe
from pop3mon.secrets import Secret

from pop3mon_lab.certs import LabCerts
from pop3mon_lab.dovecot import DovecotLab, LabUnavailable, free_port

REMOTE = "127.0.0.2"
TLS_FIRST = "server requires TLS before login: use security: starttls"


@pytest.fixture(scope="module")
def strict_dovecot(
    lab_certs: LabCerts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DovecotLab, int]]:
    """A Dovecot with ``disable_plaintext_auth = yes`` and a listener on 127.0.0.2."""
    port = free_port(REMOTE)
    extra = (
        "disable_plaintext_auth = yes\n"
        "service pop3-login {\n"
        f"  inet_listener pop3_remote {{\n    address = {REMOTE}\n    port = {port}\n  }}\n"
        "}\n"
    )
    try:
        lab = DovecotLab(
            lab_certs, workdir=tmp_path_factory.mktemp("dovecot-strict"), extra_config=extra
        )
    except LabUnavailable as exc:
        if os.environ.get("POP3MON_REQUIRE_DOVECOT", "") not in ("", "0"):
            pytest.fail(f"POP3MON_REQUIRE_DOVECOT is set but {exc}", pytrace=False)
        pytest.skip(str(exc))
    with lab:
        yield lab, port


def _probe(
    strict_dovecot: tuple[DovecotLab, int], mechanism: str, mode: str = "none"
) -> ProbeResult:
    lab, port = strict_dovecot
    return probe(
        ProbeSpec(
            id=f"strict-{mode}-{mechanism}",
            host="localhost",
            address=REMOTE,
            port=port,
            security=mode,  # type: ignore[arg-type]
            auth=mechanism,
            username=lab.demo_user,
            secret=Secret(lab.demo_password, "dovecot-strict"),
            allow_cleartext=True,
            ca_file=str(lab.ca_file),
            timeout=5.0,
        )
    )


@pytest.mark.parametrize(
    ("mechanism", "withheld"), [("user", "USER"), ("plain", "SASL PLAIN"), ("login", "SASL LOGIN")]
)
def test_dovecot_withholding_plaintext_login_is_tls_required(
    strict_dovecot: tuple[DovecotLab, int], mechanism: str, withheld: str
) -> None:
    lab, _port = strict_dovecot
    before = lab.login_count()
    r = _probe(strict_dovecot, mechanism)
    assert (r.error_kind, r.error_stage) == ("tls-required", "auth"), r.error_reason
    assert r.error_reason == f"{TLS_FIRST} (before TLS its CAPA lists STLS but not {withheld})"
    assert "does not offer" not in r.error_reason
    assert r.auth is not None and not r.auth.secret_sent
    sent = [t.text.split()[0] for t in r.transcript if t.direction == "C"]
    assert sent == ["CAPA", "QUIT"]  # not even the user name went out
    assert lab.login_count() == before


def test_dovecot_strict_still_allows_digest_mechanisms_and_starttls(
    strict_dovecot: tuple[DovecotLab, int],
) -> None:
    # The same server is healthy for what it allows: no false "TLS required".
    auto = _probe(strict_dovecot, "auto")
    assert auto.ok and auto.auth is not None and auto.auth.mechanism == "scram-sha-256"
    tls = _probe(strict_dovecot, "user", "starttls")
    assert tls.ok, tls.error_reason
    assert tls.auth is not None and tls.auth.encrypted and tls.auth.secret_sent

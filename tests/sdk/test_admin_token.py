"""The CLI's operator credential is one the services' verifier accepts, for admin RPCs only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from missive.access import RPC_ACCESS
from missive_client import Unauthenticated
from missive_client.cli._admin import mint_admin_token

from services.common.auth import KeyRing, TokenVerifier, ensure_keys
from services.common.domain import Unauthenticated as ServiceUnauthenticated


def test_the_minted_token_verifies_as_the_admin_service(tmp_path: Path) -> None:
    ensure_keys(tmp_path)
    verifier = TokenVerifier(KeyRing.load(tmp_path, "message"))
    principal = verifier.verify_service(mint_admin_token(tmp_path, "message"))
    assert (principal.kind, principal.name) == ("service", "admin")
    # Addressed to MessageService, it is refused by NotificationService.
    other = TokenVerifier(KeyRing.load(tmp_path, "notification"))
    with pytest.raises(ServiceUnauthenticated):
        other.verify_service(mint_admin_token(tmp_path, "message"))
    with pytest.raises(ServiceUnauthenticated):  # expired
        verifier.verify_service(mint_admin_token(tmp_path, "message", now=time.time() - 3600))


def test_only_the_dead_letter_rpcs_admit_the_admin_credential() -> None:
    admitted = sorted(m.rsplit("/", 1)[1] for m, a in RPC_ACCESS.items() if "admin" in a.services)
    # Those of UserService, MessageService and NotificationService, the three outbox owners.
    assert admitted == sorted(["ListDeadLetters", "ReplayDeadLetters", "DropDeadLetters"] * 3)
    owners = {m.split("/")[1] for m, a in RPC_ACCESS.items() if "admin" in a.services}
    assert owners == {
        "missive.user.v1.UserService",
        "missive.message.v1.MessageService",
        "missive.notification.v1.NotificationService",
    }
    assert all(a.services == {"admin"} for m, a in RPC_ACCESS.items() if "DeadLetters" in m)


def test_a_missing_or_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Unauthenticated, match=r"no operator key at .*admin\.key"):
        mint_admin_token(tmp_path, "message")
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "admin.key").write_text("not a key")
    with pytest.raises(Unauthenticated, match="cannot read the operator key"):
        mint_admin_token(tmp_path, "message")

"""The access sweep of tests/e2e/test_access.py on the cluster: the same tests, collected here
with this folder's ``system`` (every service in cluster mode)."""

from __future__ import annotations

import pytest

from tests.e2e.test_access import (
    test_a_user_cannot_read_or_change_another_users_data,
    test_every_protected_rest_operation_rejects_anonymous_callers,
    test_every_protected_rpc_rejects_a_forged_token,
    test_every_protected_rpc_rejects_anonymous_callers,
    test_internal_rpcs_refuse_user_tokens,
    test_rest_lists_default_email_to_the_caller,
)

pytestmark = pytest.mark.e2e

__all__ = [
    "test_a_user_cannot_read_or_change_another_users_data",
    "test_every_protected_rest_operation_rejects_anonymous_callers",
    "test_every_protected_rpc_rejects_a_forged_token",
    "test_every_protected_rpc_rejects_anonymous_callers",
    "test_internal_rpcs_refuse_user_tokens",
    "test_rest_lists_default_email_to_the_caller",
]

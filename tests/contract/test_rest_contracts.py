"""Schemathesis against every OpenAPI document, with the real services behind it.

For each of ``openapi/{user,message,notification}.yaml``:

- **in process**: the service's real Connexion app (built as its entry point builds it) served
  over ASGI, with the real Valkey of a running system behind it (and, for MessageService, the
  real UserService over gRPC); the schema is the one the app serves at ``/openapi.json``;
- **stateless**: every operation through the examples, coverage and fuzzing phases, positive
  and negative data, with every check on;
- **stateful**: schemathesis' state machine following the documents' links (create → read →
  update → delete, send → get → list → mark read → delete, list notifications → mark read,
  subscribe → unsubscribe); Redis is restored to the same snapshot before each scenario;
- **live**: the stateless run once more against the service process over HTTP.

Requests carry real user tokens, signed for the user each request acts for (see
``rest_fuzz``); schemathesis' ``ignored_auth`` check also sends each one without and with a
broken token. ``MISSIVE_FUZZ_EXAMPLES`` sets the examples per operation (default 15). The default
stateless runs are derandomised (the same examples every run); schemathesis draws true
randomness when it follows links, so stateful scenarios differ from run to run.

Checks excluded, with the reason:

- ``negative_data_rejection``, only for a request schemathesis labels invalid solely because
  it validates path parameters after percent-encoding them (``bob%40example.com`` "is not an
  email"): the server decodes the path to a valid value and rightly accepts it. Every other
  check still runs on such a request, and every check runs on all others
  (``rest_fuzz.excluded_checks``).

Opaque page tokens: valid requests carry a token the service could have issued instead of a
generated string, which is malformed and rightly rejected with the documented 400
(``rest_fuzz.with_issued_page_token``; the unit tests cover forged tokens).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from missive.notification.v1 import notification_pb2
from redis import Redis as SyncRedis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema

from services.common.auth import KeyRing, UserTokenIssuer
from services.common.bootstrap import Security, redis_ready
from services.common.grpc_client import peer_channel
from services.common.redis import create_redis
from services.common.sessions import GrpcAccounts, Sessions
from services.message.api_rest.app import create_rest_app as message_app
from services.message.peers import RETRY_METHODS, USER_SERVICE_NAME, GrpcUserDirectory
from services.message.service import MessageService
from services.message.settings import Settings as MessageSettings
from services.message.store import RedisMessageStore
from services.notification.api_rest.app import create_rest_app as notification_app
from services.notification.service import NotificationService
from services.notification.settings import Settings as NotificationSettings
from services.notification.store import RedisNotificationStore
from services.user.api_rest.app import create_rest_app as user_app
from services.user.passwords import Passwords
from services.user.service import UserService
from services.user.settings import Settings as UserSettings
from services.user.store import RedisUserStore
from tests.contract.report import REPORT
from tests.contract.rest_fuzz import (
    AsgiApp,
    LazyApp,
    RedisState,
    Tokens,
    excluded_checks,
    install,
    with_issued_page_token,
)
from tests.helpers.clients import Stubs, User, register_and_login
from tests.helpers.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DOCUMENTS = ("user", "message", "notification")
EXAMPLES = int(os.environ.get("MISSIVE_FUZZ_EXAMPLES", "15"))
DETERMINISTIC = "MISSIVE_FUZZ_EXAMPLES" not in os.environ
IN_PROCESS, LIVE, STATEFUL = "REST in process", "REST live", "REST stateful"


@dataclass
class Fuzzed:
    system: System
    users: list[User]
    state: RedisState
    tokens: Tokens


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    system = System.create(tmp_path_factory.mktemp("rest-contract-system"))
    try:
        system.start()
        users = asyncio.run(_prepare(system))
        state = RedisState(system.valkey.url, (0, 1, 2))
        state.save()
        issuer = UserTokenIssuer(KeyRing.load(system.keys_dir, "user", sign_user_tokens=True), 900)
        yield Fuzzed(
            system, users, state, Tokens(issuer, users[0].email, accounts_in(system.valkey.url))
        )
    finally:
        system.close()


def accounts_in(redis_url: str) -> Callable[[str], tuple[str, int]]:
    """The account id and token version UserService stores for an email ("", 0 if none)."""
    users = SyncRedis.from_url(redis_url, db=0, decode_responses=True)

    def account(email: str) -> tuple[str, int]:
        raw = users.get(f"user:{email}")
        document = json.loads(str(raw)) if raw else {}
        return str(document.get("id", "")), int(document.get("token_version", 0))

    return account


async def _prepare(system: System) -> list[User]:
    """Three users who wrote to each other, and Ada's notifications delivered."""
    await system.wait_healthy()
    users = [await register_and_login(system, name) for name in ("Ada", "Bob", "Cy")]
    ada, bob, cy = users
    stubs = Stubs.connect(system)
    try:
        await stubs.send(ada, bob, "hello Bob")
        await stubs.send(bob, ada, "hi Ada")
        await stubs.send(cy, ada, "hey")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listed = await stubs.notification.ListNotifications(
                notification_pb2.ListNotificationsRequest(email=ada.email),
                metadata=ada.metadata,
                timeout=5,
            )
            if len(listed.notifications) == 2:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the notifications of the setup messages never arrived")
    finally:
        await stubs.close()
    return users


def _in_process_app(name: str, system: System) -> LazyApp:
    """The service's Connexion app, wired as ``python -m services.<name>`` wires it."""
    env = system.env()

    async def user() -> AsgiApp:
        settings = UserSettings.from_env(env)
        security = Security.load(settings.keys_dir, "user", sign_user_tokens=True)
        redis = create_redis(settings.common.redis_url, settings.redis_db)
        service = UserService(
            RedisUserStore(redis),
            Passwords(settings.hashing, settings.hash_concurrency),
            UserTokenIssuer(security.keys, settings.token_ttl_seconds),
            settings.login,
        )
        sessions = Sessions(service, ttl_seconds=0)
        app: AsgiApp = user_app(
            service,
            security.verifier,
            redis_ready(redis),
            sessions,
            max_body_bytes=settings.max_body_bytes,
        )
        return app

    async def message() -> AsgiApp:
        settings = MessageSettings.from_env(env)
        security = Security.load(settings.keys_dir, "message")
        store = RedisMessageStore(
            create_redis(settings.common.redis_url, settings.redis_db),
            quota_bytes=settings.quota_bytes,
        )
        users = peer_channel(
            settings.user_addr,
            security.credentials,
            target="user",
            retry_service=USER_SERVICE_NAME,
            retry_methods=RETRY_METHODS,
        )
        directory = GrpcUserDirectory(users)
        service = MessageService(store, directory, limits=settings.send)
        app: AsgiApp = message_app(service, security.verifier, store.ping, Sessions(directory))
        return app

    async def notification() -> AsgiApp:
        settings = NotificationSettings.from_env(env)
        security = Security.load(settings.keys_dir, "notification")
        redis = create_redis(settings.common.redis_url, settings.redis_db)
        store = RedisNotificationStore(redis, retention=settings.retention)
        accounts = GrpcAccounts(
            peer_channel(settings.user_addr, security.credentials, target="user")
        )
        app: AsgiApp = notification_app(
            NotificationService(store, accounts), security.verifier, store.ping, Sessions(accounts)
        )
        return app

    factories = {"user": user, "message": message, "notification": notification}
    return LazyApp(factories[name])


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES,
                "deterministic": DETERMINISTIC,
                "database": "none",
            },
            "checks": {"enabled": True},
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        }
    )


def _load(fuzzed: Fuzzed, name: str, *, live: bool) -> BaseSchema:
    if live:
        url = fuzzed.system.rest_url(name)
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=_config())
        schema.config.update(base_url=url)
    else:
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json", _in_process_app(name, fuzzed.system), config=_config()
        )
    install(schema, fuzzed.tokens, [user.email for user in fuzzed.users])
    operations = [op.ok().label for op in schema.get_all_operations() if isinstance(op, Ok)]
    for suite in (LIVE,) if live else (IN_PROCESS, STATEFUL):
        REPORT.declare(suite, name, operations)
    return schema


def _call_and_validate(case: Case[Any], suite: str, document: str) -> None:
    """Send ``case``, record the outcome for the summary, and run every check on it."""
    response = with_issued_page_token(case).call()
    REPORT.record(suite, document, case.operation.label, str(response.status_code))
    case.validate_response(response, excluded_checks=excluded_checks(case), transport_kwargs={})


@pytest.fixture(scope="module")
def user_schema(fuzzed: Fuzzed) -> BaseSchema:
    return _load(fuzzed, "user", live=False)


@pytest.fixture(scope="module")
def message_schema(fuzzed: Fuzzed) -> BaseSchema:
    return _load(fuzzed, "message", live=False)


@pytest.fixture(scope="module")
def notification_schema(fuzzed: Fuzzed) -> BaseSchema:
    return _load(fuzzed, "notification", live=False)


@pytest.fixture(scope="module")
def user_live_schema(fuzzed: Fuzzed) -> BaseSchema:
    return _load(fuzzed, "user", live=True)


@pytest.fixture(scope="module")
def message_live_schema(fuzzed: Fuzzed) -> BaseSchema:
    return _load(fuzzed, "message", live=True)


@pytest.fixture(scope="module")
def notification_live_schema(fuzzed: Fuzzed) -> BaseSchema:
    return _load(fuzzed, "notification", live=True)


# ------------------------------------------------------------------------------------------
# stateless: every operation, in process


@schemathesis.pytest.from_fixture("user_schema").parametrize()
def test_user_api_honours_its_contract(case: Case[Any]) -> None:
    _call_and_validate(case, IN_PROCESS, "user")


@schemathesis.pytest.from_fixture("message_schema").parametrize()
def test_message_api_honours_its_contract(case: Case[Any]) -> None:
    _call_and_validate(case, IN_PROCESS, "message")


@schemathesis.pytest.from_fixture("notification_schema").parametrize()
def test_notification_api_honours_its_contract(case: Case[Any]) -> None:
    _call_and_validate(case, IN_PROCESS, "notification")


# ------------------------------------------------------------------------------------------
# stateless: every operation, against the service process over HTTP


@schemathesis.pytest.from_fixture("user_live_schema").parametrize()
def test_live_user_api_honours_its_contract(case: Case[Any]) -> None:
    _call_and_validate(case, LIVE, "user")


@schemathesis.pytest.from_fixture("message_live_schema").parametrize()
def test_live_message_api_honours_its_contract(case: Case[Any]) -> None:
    _call_and_validate(case, LIVE, "message")


@schemathesis.pytest.from_fixture("notification_live_schema").parametrize()
def test_live_notification_api_honours_its_contract(case: Case[Any]) -> None:
    _call_and_validate(case, LIVE, "notification")


# ------------------------------------------------------------------------------------------
# stateful: the documents' links, from the same Redis snapshot every scenario


@pytest.mark.parametrize("document", DOCUMENTS)
def test_linked_workflows_honour_the_contract(
    fuzzed: Fuzzed, document: str, request: pytest.FixtureRequest
) -> None:
    schema: BaseSchema = request.getfixturevalue(f"{document}_schema")

    class Workflows(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            fuzzed.state.restore()

        def before_call(self, case: Case[Any]) -> None:
            with_issued_page_token(case)
            # Links fill in parameters after the token was chosen: sign for the final request.
            if "Authorization" in case.headers:
                case.headers["Authorization"] = f"Bearer {fuzzed.tokens.for_case(case)}"

        def after_call(self, response: Any, case: Case[Any]) -> None:
            REPORT.record(STATEFUL, document, case.operation.label, str(response.status_code))

        def validate_response(self, response: Any, case: Case[Any], **kwargs: Any) -> None:
            case.validate_response(
                response, excluded_checks=excluded_checks(case), transport_kwargs=kwargs
            )

    Workflows.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=10,
            deadline=None,
            database=None,
            derandomize=DETERMINISTIC,
            suppress_health_check=list(HealthCheck),
        )
    )

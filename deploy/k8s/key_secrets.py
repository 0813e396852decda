"""Render the Secrets the Kubernetes manifests mount, from a KEYS_DIR on the operator's machine.

    .venv/bin/python deploy/k8s/key_secrets.py --keys-dir .data/k8s-keys --namespace missive \\
        | kubectl apply -f -

Missing key pairs are created in ``--keys-dir`` first (never overwritten), in the layout the
services load (services/common/auth.py): ``user-token/<kid>.key|.pub`` and
``service/<name>.key|.pub``. Keep that directory safe: it holds ``service/admin.key``, the
operators' credential for ``missive admin``, which never goes into the cluster.

Secrets written (each pod mounts only its share, see deploy/k8s/base/*.yaml):

    missive-user-token-public     user-token/*.pub          every service (verify user tokens)
    missive-user-token-signing    user-token/*.key          UserService only (signs them)
    missive-service-public        service/*.pub             every service (verify callers)
    missive-service-key-<name>    service/<name>.key        that service only
    missive-web                   WEB_SECRET                the web inbox (forms, cookies)
    missive-valkey                VALKEY_PASSWORD, REDIS_URL,  Valkey and the services that
                                  REDIS_CLUSTER_URL         store data (production overlay;
                                                            the cluster overlay uses
                                                            REDIS_CLUSTER_URL)

WEB_SECRET and VALKEY_PASSWORD are taken from the environment when set, else generated.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import yaml

from services.common.auth import SERVICES, ensure_keys

WEB_SECRET_ENV = "WEB_SECRET"
VALKEY_PASSWORD_ENV = "VALKEY_PASSWORD"
MIN_SECRET = 32
VALKEY_URL = "redis://:{password}@valkey:6379"
CLUSTER_NODES = 6  # deploy/k8s/overlays/cluster/valkey.yaml
VALKEY_CLUSTER_URL = "redis+cluster://:{password}@" + ",".join(
    f"valkey-{index}.valkey:6379" for index in range(CLUSTER_NODES)
)


def _secret(name: str, namespace: str, files: Mapping[str, bytes]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "missive"},
        },
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in files.items()},
    }


def _files(directory: Path, pattern: str) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob(pattern))}


def render(
    keys_dir: Path, namespace: str, web_secret: str, valkey_password: str
) -> list[dict[str, object]]:
    """The Secrets for ``keys_dir`` (created there first when missing)."""
    ensure_keys(keys_dir)
    user_token, service = keys_dir / "user-token", keys_dir / "service"
    documents = [
        _secret("missive-user-token-public", namespace, _files(user_token, "*.pub")),
        _secret("missive-user-token-signing", namespace, _files(user_token, "*.key")),
        _secret("missive-service-public", namespace, _files(service, "*.pub")),
    ]
    for name in SERVICES:
        key = f"{name}.key"
        documents.append(
            _secret(f"missive-service-key-{name}", namespace, {key: (service / key).read_bytes()})
        )
    documents.append(_secret("missive-web", namespace, {WEB_SECRET_ENV: web_secret.encode()}))
    password = quote(valkey_password, safe="")
    valkey = {
        VALKEY_PASSWORD_ENV: valkey_password.encode(),
        "REDIS_URL": VALKEY_URL.format(password=password).encode(),
        "REDIS_CLUSTER_URL": VALKEY_CLUSTER_URL.format(password=password).encode(),
    }
    documents.append(_secret("missive-valkey", namespace, valkey))
    return documents


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys-dir", type=Path, required=True, help="KEYS_DIR to read or fill")
    parser.add_argument("--namespace", default="missive", help="namespace of the Secrets")
    args = parser.parse_args(argv)
    chosen = {}
    for name in (WEB_SECRET_ENV, VALKEY_PASSWORD_ENV):
        chosen[name] = environ.get(name, "").strip() or secrets.token_urlsafe(48)
        if len(chosen[name]) < MIN_SECRET:
            parser.error(f"{name} must be at least {MIN_SECRET} characters long")
    documents = render(
        args.keys_dir, args.namespace, chosen[WEB_SECRET_ENV], chosen[VALKEY_PASSWORD_ENV]
    )
    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

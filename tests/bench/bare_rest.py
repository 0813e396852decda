"""The bare REST baseline: a Starlette app on uvicorn serving the documents Missive answered.

``python -m tests.bench.bare_rest PORT DOCS.json``: DOCS maps ``"METHOD path?query"`` to the
status and JSON body the real service gave for that request in this run; each request is routed
by Starlette, its body (if any) parsed, and the document serialised again by JSONResponse - what a
minimal hand-written handler costs, without validation, auth or storage.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def build_app(docs: dict[str, dict[str, Any]]) -> Starlette:
    async def handler(request: Request) -> Response:
        if request.method == "POST":
            json.loads(await request.body())
        key = f"{request.method} {request.url.path}"
        if request.url.query:
            key += f"?{request.url.query}"
        doc = docs.get(key)
        if doc is None:
            return JSONResponse({"title": "Not Found", "status": 404}, status_code=404)
        return JSONResponse(doc["body"], status_code=doc["status"], media_type=doc["media_type"])

    paths = sorted({key.split(" ", 1)[1].split("?", 1)[0] for key in docs})
    return Starlette(routes=[Route(path, handler, methods=["GET", "POST"]) for path in paths])


def main(argv: list[str]) -> None:
    port, docs_path = int(argv[0]), argv[1]
    with open(docs_path, encoding="utf-8") as handle:
        docs = json.load(handle)
    uvicorn.run(build_app(docs), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])

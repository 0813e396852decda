"""Missive's microservices and the runtime code they share."""

import warnings

# Connexion imports starlette.testclient at import time (for its own test client), and Starlette
# warns there that httpx is deprecated for that test client. No service uses the test client, so
# the warning is noise on every start: ignore exactly that one, raised from connexion's import.
warnings.filterwarnings(
    "ignore",
    message=r"Using `httpx` with `starlette\.testclient` is deprecated",
    module=r"connexion\.",
)

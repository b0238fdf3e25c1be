"""The OMDb API key: where it comes from, and a value that never prints itself.

Order: an explicit key, then ``$OMDB_API_KEY``, then a Prefect Secret block (name
``omdb-api-key`` by default; loaded only when the variable is absent, so runs without
Prefect never touch it). The key travels as ``ApiKey``, whose ``repr``/``str`` are ``***``:
it can sit in dataclasses, Dask task arguments and exception arguments without showing up
in logs or tracebacks. Only ``reveal()`` gives the value, used at the one place a request is
sent (``mmiris.crawl.fetcher``).
"""

from __future__ import annotations

import logging
import os

from mmiris.errors import MmirisError

log = logging.getLogger("mmiris.crawl")

ENV_VAR = "OMDB_API_KEY"
DEFAULT_SECRET_BLOCK = "omdb-api-key"


class ApiKey:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("ApiKey", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # picklable for Dask, still without printing itself
        return (ApiKey, (self._value,))


def resolve_api_key(api_key: str | ApiKey | None = None, secret_block: str | None = DEFAULT_SECRET_BLOCK) -> ApiKey:
    """The key from the argument, ``$OMDB_API_KEY`` or the Prefect Secret block."""
    if isinstance(api_key, ApiKey) and api_key:
        return api_key
    if api_key:
        return ApiKey(str(api_key))
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return ApiKey(env)
    if secret_block:
        log.info(
            "$%s is unset: reading Prefect Secret block %r (without PREFECT_API_URL this "
            "starts a temporary local Prefect server)",
            ENV_VAR,
            secret_block,
        )
        try:
            from prefect.blocks.system import Secret

            value = Secret.load(secret_block).get()  # type: ignore[union-attr]  # sync context: not a coroutine
        except Exception as exc:  # noqa: BLE001 (any failure means: no key there)
            log.debug("no Prefect Secret block %r: %s", secret_block, type(exc).__name__)
        else:
            if value:
                log.info("OMDb API key from Prefect Secret block %r", secret_block)
                return ApiKey(str(value))
    raise MmirisError(
        f"no OMDb API key: set ${ENV_VAR}, or store it in a Prefect Secret block named "
        f"{secret_block!r} (--secret-block NAME to use another); get a key at "
        "https://www.omdbapi.com/apikey.aspx"
    )

"""The server's optional bearer token: checked on every request, compared in constant time.

Clients send ``Authorization: Bearer TOKEN``. A browser cannot add a header to a page
load, so ``?token=TOKEN`` on any URL, when right, answers ``303 See Other`` to the same URL
without it and sets an ``HttpOnly``, ``SameSite=Strict`` cookie that later requests carry
(the token leaves the address bar, the history and ``Referer`` headers). The parameter
must be spelled ``token``: a spelling with ``%``-escapes (``?%74oken=``), which log
readers and proxies may not recognise as the token, is refused (400). CORS preflight
requests (``OPTIONS``) carry no credentials and are answered without one.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

__all__ = ["COOKIE", "token_middleware"]

#: The cookie a browser keeps the token in.
COOKIE = "fsspec_virtual_token"
_CHALLENGE = 'Bearer realm="fsspec-virtual"'


def _same(given: str | None, token: bytes) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token)


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def token_middleware(token: str) -> Middleware:
    """A middleware that refuses every request without ``token`` (401)."""
    if not token:
        raise ValueError("the token must not be empty")
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return await handler(request)
        if "token" in request.query:
            # the target as the client sent it (aiohttp's URL decodes escapes)
            path, _, query = request.raw_path.partition("?")
            raw = query.partition("#")[0].split("&")
            literal = [p for p in raw if p.partition("=")[0] == "token"]
            if len(literal) != len(request.query.getall("token")):
                raise web.HTTPBadRequest(
                    text="400: spell the query parameter 'token' as it is, without %-escapes\n"
                )
            if not _same(request.query.get("token"), expected):
                raise _refused("wrong token")
            rest = [p for p in raw if p and p.partition("=")[0] != "token"]
            location = path + (f"?{'&'.join(rest)}" if rest else "")
            answer = web.HTTPSeeOther(location)
            answer.set_cookie(
                COOKIE, token, httponly=True, samesite="Strict", path="/", max_age=None
            )
            raise answer
        if _same(_bearer(request.headers.get("Authorization")), expected) or _same(
            request.cookies.get(COOKIE), expected
        ):
            return await handler(request)
        raise _refused("a token is needed")

    return check_token


def _refused(reason: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=f"401 Unauthorized: {reason} (Authorization: Bearer TOKEN)\n",
        headers={"WWW-Authenticate": _CHALLENGE},
    )

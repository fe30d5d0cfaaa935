"""The HTTP process's check of every ``POST /predict``, before the request is queued.

LitServe answers a batch of requests together: an exception raised for one request while the
worker decodes or tags the batch fails every request of it, and what LitServe does not expect
(a body that is not JSON) becomes a 500. So requests are checked here, in the HTTP process, as
ASGI middleware: the body is read (at most :attr:`~seqtag.serving.requests.Limits.
max_body_bytes`), parsed and checked by :func:`~seqtag.serving.requests.parse_body`, and a bad
request is answered at once with its 4xx status and ``{"detail": "FIELD: message"}``, the shape
of FastAPI's (and LitServe's 504) errors. A good request goes on unchanged, its body handed
over as read, and only good requests reach the worker, so one client's mistake never fails
another's request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from seqtag.serving.requests import Limits, RequestError, parse_body, too_large

__all__ = ["RequestGate"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Bodies LitServe would read as a form, not as JSON.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class RequestGate:
    """ASGI middleware: checks ``POST path`` requests; any other request passes untouched.

    Args:
        app: the application it wraps.
        path: the prediction endpoint (``/predict``).
        limits: the server's limits.
        spans: whether the model tags spans (only then may a request set ``min_confidence``).
    """

    def __init__(self, app: Any, *, path: str, limits: Limits, spans: bool) -> None:
        self.app = app
        self.path = path
        self.limits = limits
        self.spans = spans

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        try:
            _check_headers(scope, self.limits)
            body = await _read_body(receive, self.limits)
            if body is None:  # the client went away
                return
            parse_body(body, self.limits, spans=self.spans)
        except RequestError as err:
            response = JSONResponse({"detail": str(err)}, status_code=err.status)
            await response(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def _check_headers(scope: Message, limits: Limits) -> None:
    headers = {name.lower(): value for name, value in scope.get("headers", [])}
    kind = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
    if kind in FORM_TYPES:
        raise RequestError(
            415,
            "Content-Type",
            f"{kind}, but the body must be JSON: send Content-Type: application/json "
            "(curl --json, or -H 'Content-Type: application/json')",
        )
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
        raise too_large(limits)


async def _read_body(receive: Receive, limits: Limits) -> bytes | None:
    """The whole body, refused as soon as it passes the limit; ``None`` on a disconnect."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise too_large(limits)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)

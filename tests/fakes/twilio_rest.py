"""A fake of Twilio's Calls REST API on 127.0.0.1, driven by the real twilio-python client.

Protocol facts it reproduces (twilio.com/docs/voice/api/call-resource and reference notes B2–B7):

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (form-encoded) creates a call: ``To`` and
  ``From`` are required (errors 21201 / 21213), as is ``Url``, ``Twiml`` or ``ApplicationSid``
  (21205); ``Twiml`` is at most 4000 characters. Answer ``201`` with a CallInstance JSON whose
  ``sid`` is ``"CA"`` + 32 hex digits and ``status`` ``"queued"``.
* ``POST .../Calls/{CallSid}.json`` updates a call: ``Status=completed`` ends it; ``Twiml=…``
  redirects it, which a call that is not in progress refuses with 21220 ("Call is not in-progress.
  Cannot redirect."). An unknown SID gives 20404.
* ``GET .../Calls/{CallSid}.json`` fetches it.
* HTTP Basic authentication with AccountSid:AuthToken; a mismatch gives 401 / 20003.
* Errors are JSON ``{"code", "message", "more_info", "status"}`` with that HTTP status.

Test controls: ``fail_next(code, message, status)`` programs the next matching request to fail,
``delay_s`` holds every answer (for client timeouts), ``set_status(sid, status)`` moves a call on
(e.g. to ``in-progress`` as if answered), ``callbacks_before_create`` lists call statuses to post
to the new call's ``StatusCallback`` before the create request is answered (a callback that
overtakes the REST response, as Twilio's can), form-encoded with Twilio's parameters and signed
with the auth token (``X-Twilio-Signature``); their HTTP statuses go to ``callback_results``.
Every request is recorded in ``requests`` with its method, path and form fields as lists
(repeated fields such as ``StatusCallbackEvent`` keep every value).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"

_CALLS = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Calls\.json$")
_CALL = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Calls/(?P<sid>CA\w+)\.json$")
_LIVE = {"queued", "initiated", "ringing", "in-progress"}


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    form: dict[str, list[str]]
    authorization: str

    def field(self, name: str) -> str | None:
        """The single value of form field ``name`` (``None`` when absent)."""
        values = self.form.get(name)
        return values[0] if values else None


@dataclass
class _ProgrammedError:
    code: int
    message: str
    status: int
    method: str | None
    path_contains: str | None
    problem_details: bool = False


@dataclass
class FakeTwilioREST:
    """State and controls of the fake; ``base_url`` is what ``TWILIO_API_BASE_URL`` should be."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    base_url: str = ""
    delay_s: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    callbacks_before_create: list[str] = field(default_factory=list)
    callback_results: list[tuple[str, int | str]] = field(default_factory=list)
    _errors: list[_ProgrammedError] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)

    def fail_next(
        self,
        code: int,
        message: str,
        status: int = 400,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        problem_details: bool = False,
    ) -> None:
        """Make the next request (optionally only of ``method`` / with ``path_contains`` in its path)
        answer Twilio's error JSON with ``code``, ``message`` and HTTP ``status``; with
        ``problem_details`` the body is RFC 9457 (``type``, ``title``, ``status``, ``code``,
        ``detail``), which twilio-python 9.x raises as ``TwilioServiceException``."""
        with self._lock:
            self._errors.append(
                _ProgrammedError(code, message, status, method, path_contains, problem_details)
            )

    def set_status(self, sid: str, status: str) -> None:
        """Move call ``sid`` to ``status`` as Twilio would (e.g. ``in-progress`` when answered)."""
        with self._lock:
            self.calls[sid]["status"] = status

    def requests_to(self, method: str, path_suffix: str = "") -> list[RecordedRequest]:
        """Recorded requests with ``method`` whose path ends with ``path_suffix``."""
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    def calls_path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Calls.json"

    # --- request handling (runs on the server's threads) ------------------------------------

    def handle(
        self, method: str, path: str, form: dict[str, list[str]], authorization: str
    ) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, form, authorization))
        if self.delay_s:
            self._closing.wait(self.delay_s)
        if authorization != self._expected_authorization():
            return 401, _error(20003, "Authenticate", 401)
        with self._lock:
            for i, programmed in enumerate(self._errors):
                if (programmed.method is None or programmed.method == method) and (
                    programmed.path_contains is None or programmed.path_contains in path
                ):
                    del self._errors[i]
                    if programmed.problem_details:
                        return programmed.status, {
                            "type": f"https://www.twilio.com/docs/api/errors/{programmed.code}",
                            "title": "Bad Request" if programmed.status == 400 else "Error",
                            "status": programmed.status,
                            "code": programmed.code,
                            "detail": programmed.message,
                        }
                    return programmed.status, _error(programmed.code, programmed.message, programmed.status)
        one = lambda name: (form.get(name) or [None])[0]  # noqa: E731
        if match := _CALLS.match(path):
            if match["account"] != self.account_sid:
                return 404, _not_found(path)
            if method != "POST":
                return 405, _error(20004, "Method not allowed", 405)
            return self._create(
                one("To"), one("From"), one("Url"), one("Twiml"), one("ApplicationSid"), one("StatusCallback")
            )
        if match := _CALL.match(path):
            with self._lock:
                call = self.calls.get(match["sid"])
            if match["account"] != self.account_sid or call is None:
                return 404, _not_found(path)
            if method == "GET":
                return 200, call
            if method == "POST":
                return self._update(call, one("Status"), one("Twiml"), one("Url"))
            return 405, _error(20004, "Method not allowed", 405)
        return 404, _not_found(path)

    def _expected_authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()

    def _create(
        self,
        to: str | None,
        from_: str | None,
        url: str | None,
        twiml: str | None,
        app: str | None,
        status_callback: str | None = None,
    ) -> tuple[int, Any]:
        if not to:
            return 400, _error(21201, "No 'To' number is specified", 400)
        if not from_:
            return 400, _error(21213, "No 'From' number is specified", 400)
        if not (url or twiml or app):
            return 400, _error(21205, "Url parameter is required.", 400)
        if twiml is not None and len(twiml) > 4000:
            return 400, _error(21205, "Twiml is longer than 4000 characters.", 400)
        sid = "CA" + secrets.token_hex(16)
        now = formatdate(usegmt=True)
        call = {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": "2010-04-01",
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {},
            "to": to,
            "to_formatted": to,
            "trunk_sid": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
        }
        with self._lock:
            self.calls[sid] = call
        if status_callback:
            for sequence, status in enumerate(self.callbacks_before_create):
                self._post_status_callback(status_callback, call, status, sequence)
        return 201, call

    def _post_status_callback(self, url: str, call: dict[str, Any], status: str, sequence: int) -> None:
        """POST a status callback for ``call`` to ``url`` as Twilio does: form-encoded, signed."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call["sid"],
            "CallStatus": status,
            "Direction": "outbound-api",
            "From": call["from"],
            "To": call["to"],
            "Called": call["to"],
            "Caller": call["from"],
            "SequenceNumber": str(sequence),
            "Timestamp": formatdate(usegmt=True).replace("GMT", "+0000"),
            "CallbackSource": "call-progress-events",
        }
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        try:
            response = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10,
                                  trust_env=False)
            result: int | str = response.status_code
        except httpx.HTTPError as exc:
            result = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.callback_results.append((status, result))

    def _update(
        self, call: dict[str, Any], status: str | None, twiml: str | None, url: str | None
    ) -> tuple[int, Any]:
        with self._lock:
            live = call["status"] in _LIVE
            if status in ("completed", "canceled"):
                # What Twilio answers for a call that already ended is not documented; this fake
                # answers 200 with the call unchanged. Tests program 20404/21220 explicitly.
                if live:
                    call["status"] = "completed"
                    call["end_time"] = formatdate(usegmt=True)
                return 200, call
            if twiml or url:
                if call["status"] != "in-progress":
                    return 400, _error(21220, "Call is not in-progress. Cannot redirect.", 400)
                call["date_updated"] = formatdate(usegmt=True)
                return 200, call
        return 400, _error(21218, "Invalid ApiVersion or update parameters.", 400)


def _error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _not_found(path: str) -> dict[str, Any]:
    return _error(20404, f"The requested resource {path} was not found", 404)


def _handler_for(fake: FakeTwilioREST) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            form = parse_qs(body, keep_blank_values=True)
            status, payload = fake.handle(
                self.command, parts.path, form, self.headers.get("Authorization", "")
            )
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    return Handler


class FakeTwilioServer:
    """Runs a ``FakeTwilioREST`` on a ``ThreadingHTTPServer`` bound to 127.0.0.1 (free port) in a
    daemon thread. Use as a context manager; ``.fake`` is the state and controls."""

    def __init__(self) -> None:
        self.fake = FakeTwilioREST()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self.fake))
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.fake.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-twilio", daemon=True
        )

    def __enter__(self) -> FakeTwilioREST:
        self._thread.start()
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.fake._closing.set()  # wakes delayed handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def twilio_rest() -> Iterator[FakeTwilioREST]:
    """A running fake Twilio REST API (see ``FakeTwilioREST``); settings are not touched."""
    with FakeTwilioServer() as fake:
        yield fake

"""The Twilio SMS channel: signature checks, inbound parsing, sends and delivery reports.

Everything that touches the ``twilio`` package lives here (the web routes in
``bot/web/twilio_sms.py`` only call this adapter):

- inbound webhooks are verified with ``twilio.request_validator.RequestValidator``;
- sends go through the official REST client (``client.messages.create_async``), whose HTTP
  transport is :class:`TwilioTransport`: an ``httpx`` client (the HTTP library the rest of
  civicbot uses) that also points the client at ``CIVICBOT_TWILIO_API_BASE``, so tests and
  staging can run against a local fake Twilio without patching anything;
- Twilio's HTTP statuses and error codes become :mod:`channels.errors` types in one function,
  :func:`classify_error`, used both for failed sends and for delivery reports.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import phonenumbers
from twilio.base.exceptions import TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client

from channels.base import Content, InboundMessage
from channels.errors import ChannelError, PermanentError, RecipientOptedOut, RetryableError
from channels.render import SmsPaging, render_sms
from channels.sms_text import DEFAULT_MAX_SEGMENTS
from channels.text import clean_json, clean_text
from flows.catalogue import Catalogue
from flows.events import MessageCreated

log = logging.getLogger(__name__)

CHANNEL = "sms"
TWILIO_API_BASE = "https://api.twilio.com"
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/sms"

# Twilio error codes (https://www.twilio.com/docs/api/errors).
UNSUBSCRIBED = 21610  # the recipient texted STOP to this sender
TOO_MANY_REQUESTS = 20429
UNDELIVERABLE = range(30003, 30009)  # unreachable, blocked, unknown, landline, carrier, filtered

# Transport errors that mean the request never reached Twilio (nothing can have been sent).
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

# Twilio's Advanced Opt-Out names the keyword class it recognised; the engine's words for them.
OPT_OUT_TYPES = {"STOP": "STOP", "START": "START", "HELP": "HELP"}


def classify_error(
    *,
    status: int | None = None,
    code: int | None = None,
    detail: str = "",
    maybe_sent: bool = False,
) -> ChannelError:
    """The one mapping from a Twilio failure to a :mod:`channels.errors` type.

    ``status`` is the REST API's HTTP status (None when no answer came: a timeout or a
    connection failure); ``code`` is Twilio's error code, from the REST error body or a
    delivery report's ``ErrorCode``. ``maybe_sent``: no answer came after the request went
    out (a read timeout, a dropped connection), so Twilio may have accepted the message.
    """
    label = f"twilio {code or status or 'no response'}: {detail}".rstrip(": ")
    if code == UNSUBSCRIBED:
        return RecipientOptedOut(label)
    if code is not None and code in UNDELIVERABLE:
        return PermanentError(label)
    if status is None and code is None:
        return RetryableError(label, maybe_sent=maybe_sent)
    if code == TOO_MANY_REQUESTS or status == 429 or (status is not None and status >= 500):
        return RetryableError(label)
    return PermanentError(label)


class TwilioTransport(AsyncHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """The twilio REST client's HTTP seam, on httpx, sending to ``api_base``.

    The twilio client builds every request (URL, form, auth, headers) and parses every answer
    (``TwilioRestException``); this class only carries the bytes. Request URLs that start with
    Twilio's API host are re-based onto ``api_base`` when it differs.
    """

    def __init__(self, api_base: str = TWILIO_API_BASE, timeout: float = 15.0) -> None:
        super().__init__(log, True, timeout)
        self.api_base = api_base.rstrip("/")
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    def rebase(self, url: str) -> str:
        if self.api_base == TWILIO_API_BASE:
            return url
        parts = urlsplit(url)
        if not parts.netloc.endswith("twilio.com"):
            return url
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.api_base}{parts.path}{query}"

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        response = await self._http.request(
            method.upper(),
            self.rebase(url),
            params=_query(params),
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout if timeout is not None else self.timeout,
            follow_redirects=allow_redirects,
        )
        return TwilioResponse(response.status_code, response.text, response.headers)

    async def aclose(self) -> None:
        await self._http.aclose()


def _query(params: Mapping[str, object] | None) -> dict[str, Any] | None:
    return None if not params else {k: v for k, v in params.items() if v is not None}


@dataclass(frozen=True)
class DeliveryReport:
    """A status callback: which message, what state Twilio reports, and any error."""

    message_sid: str
    status: str
    error_code: int | None
    error: ChannelError | None


class InvalidWebhook(ValueError):
    """A signed webhook without the fields Twilio always sends."""


class TwilioSmsChannel(SmsPaging):
    """The ``sms`` channel (the composition root builds it from settings)."""

    name = CHANNEL
    delivery_reports = True  # status callbacks to STATUS_CALLBACK_PATH

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        public_url: str,
        catalogue: Catalogue,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        api_base: str = TWILIO_API_BASE,
        rate_per_second: float = 10.0,
        max_segments: int = DEFAULT_MAX_SEGMENTS,
        default_region: str = "GB",
        timeout: float = 15.0,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("a from number or a messaging service SID is needed")
        self.rate_per_second = rate_per_second
        self.catalogue = catalogue
        self.public_url = public_url.rstrip("/")
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.max_segments = max_segments
        self.default_region = default_region
        self._validator = RequestValidator(auth_token)
        self._transport = TwilioTransport(api_base, timeout)
        self._client = Client(account_sid, auth_token, http_client=self._transport)

    # ---- outbound ---------------------------------------------------------------------------

    def render(self, message: MessageCreated, language: str = "en") -> Content:
        return render_sms(message, language, self.max_segments, self.catalogue)

    async def send(self, address: str, content: Content) -> str | None:
        sender: dict[str, str] = (
            {"messaging_service_sid": self.messaging_service_sid}
            if self.messaging_service_sid
            else {"from_": str(self.from_number)}
        )
        callback = self.public_url + STATUS_CALLBACK_PATH
        attempt = content.get("attempt")
        if isinstance(attempt, str) and attempt.isalnum():
            # Twilio calls back with this URL, so even if its reply to this request is lost,
            # the first status report tells us this attempt was accepted and its SID.
            callback += f"?attempt={attempt}"
        try:
            message = await self._client.messages.create_async(
                to=address,
                body=str(content.get("text", "")),
                status_callback=callback,
                **sender,
            )
        except TwilioRestException as exc:
            raise classify_error(status=exc.status, code=_int(exc.code), detail=exc.msg) from exc
        except NOT_SENT as exc:  # the request never reached Twilio
            raise classify_error(detail=exc.__class__.__name__) from exc
        except httpx.TransportError as exc:  # no answer after sending: it may have gone
            raise classify_error(detail=exc.__class__.__name__, maybe_sent=True) from exc
        sid = message.sid
        return str(sid) if sid else None

    async def find_sent(self, address: str, content: Content, since: datetime) -> list[str]:
        """SIDs of messages Twilio holds to ``address`` from our sender with this body,
        created since ``since`` (newest first): what an earlier attempt may have sent."""
        sender: dict[str, str] = {} if self.messaging_service_sid else {
            "from_": str(self.from_number)
        }
        body = str(content.get("text", ""))
        try:
            messages = await self._client.messages.list_async(to=address, limit=20, **sender)
        except TwilioRestException as exc:
            raise classify_error(status=exc.status, code=_int(exc.code), detail=exc.msg) from exc
        except httpx.TransportError as exc:
            raise classify_error(detail=exc.__class__.__name__) from exc
        found = []
        for message in messages:
            created = message.date_created
            if message.body != body or not message.sid:
                continue
            if isinstance(created, datetime) and created < since:
                continue
            found.append(str(message.sid))
        return found

    async def aclose(self) -> None:
        await self._transport.aclose()

    # ---- inbound ----------------------------------------------------------------------------

    def verify(
        self,
        path_and_query: str,
        form: Any,
        signature: str | None,
        signature_settings: str | None = None,
    ) -> bool:
        """Whether ``signature`` (X-Twilio-Signature) signs the public URL of this request and
        its POSTed ``form``. The public URL, not the request's own: behind a proxy they differ.
        ``signature_settings`` is the X-Twilio-Webhooks-Signature-Settings header, if any."""
        if not signature:
            return False
        url = self.public_url + path_and_query
        algorithm = get_signature_algorithm(signature_settings)
        return bool(self._validator.validate(url, form, signature, algorithm))

    def normalise_number(self, number: str) -> str | None:
        """A phone number in E.164, or None when it is not one (short codes, sender names)."""
        try:
            parsed = phonenumbers.parse(number, self.default_region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(parsed):
            return None
        return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))

    def parse_inbound(self, form: Mapping[str, str]) -> InboundMessage | None:
        """The neutral message for a verified inbound webhook; None for a sender we cannot
        reply to. Twilio's ``OptOutType`` (its own STOP/START/HELP handling) is honoured by
        giving the engine that keyword, whatever words the person used."""
        sid = form.get("MessageSid") or form.get("SmsSid")
        sender = form.get("From")
        if not sid or not sender:
            raise InvalidWebhook("MessageSid and From are required")
        _check_sid(sid)
        address = self.normalise_number(sender)
        if address is None:
            return None
        text = clean_text(form.get("Body", ""))
        opt_out = OPT_OUT_TYPES.get(form.get("OptOutType", "").strip().upper())
        if opt_out is not None:
            text = opt_out
        return InboundMessage(
            channel=CHANNEL, address=address, provider_id=sid, text=text, raw=clean_json(dict(form))
        )

    def parse_status(self, form: Mapping[str, str]) -> DeliveryReport:
        sid = form.get("MessageSid") or form.get("SmsSid")
        status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
        if not sid or not status:
            raise InvalidWebhook("MessageSid and MessageStatus are required")
        _check_sid(sid)
        code = _int(form.get("ErrorCode"))
        error = None
        if code:
            # stored on the outbox row (or a held report): PostgreSQL refuses NUL in text
            detail = clean_text(form.get("ErrorMessage", "")).strip()
            error = classify_error(code=code, detail=detail or status)
        return DeliveryReport(message_sid=sid, status=status, error_code=code or None, error=error)


# Twilio message SIDs: two letters (SM, MM) and 32 hex digits.
_SID = re.compile(r"[A-Za-z]{2}[0-9a-fA-F]{32}")


def _check_sid(sid: str) -> None:
    if not _SID.fullmatch(sid):
        raise InvalidWebhook("MessageSid is not a Twilio message SID")


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None

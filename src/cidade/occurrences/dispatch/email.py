"""E-mail through the city's SMTP server (aiosmtplib): CIDADE_SMTP_URL, CIDADE_SMTP_FROM.

``smtp://[user:password@]host[:port]`` (port 25 by default; STARTTLS when the server offers
it, its certificate verified) or ``smtps://...`` (TLS from the first byte, port 465). The
server is the deployment's, not a caller's: it is reached whatever its address.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from cidade.occurrences.dispatch.channel import FAILED, RETRY, SENT, Outcome
from cidade.store.occurrences import OccurrenceMessage

log = logging.getLogger("cidade.occurrences.dispatch")


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    tls: bool  # TLS from the start (smtps); else STARTTLS when offered
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpServer:
    """CIDADE_SMTP_URL's parts; ValueError saying what is wrong."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("the URL's scheme is smtp or smtps (smtp://user:password@host:port)")
    if not parts.hostname:
        raise ValueError("the URL names no host (smtp://user:password@host:port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the URL has a host and a port, no path or query")
    tls = parts.scheme == "smtps"
    return SmtpServer(
        parts.hostname,
        port or (465 if tls else 25),
        tls,
        urllib.parse.unquote(parts.username) if parts.username else None,
        urllib.parse.unquote(parts.password) if parts.password else None,
    )


def check_sender(address: str) -> str:
    """CIDADE_SMTP_FROM: an address (``cidade@porto.pt`` or ``Porto <cidade@porto.pt>``)."""
    _, plain = email.utils.parseaddr(address)
    if "@" not in plain or any(c in address for c in "\r\n"):
        raise ValueError(f"{address!r} is not an e-mail address")
    return address


class SmtpChannel:
    """Each message in a connection of its own: messages are few (a status change each), and a
    connection kept open between them would mostly be one the server closed."""

    def __init__(self, url: str, sender: str, timeout: float) -> None:
        self.server = parse_smtp_url(url)
        self.sender = check_sender(sender)
        self.domain = email.utils.parseaddr(sender)[1].rpartition("@")[2]
        self.timeout = timeout

    def compose(self, message: OccurrenceMessage) -> EmailMessage:
        doc = message.doc
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = doc["to"]
        mail["Subject"] = doc["subject"]
        mail["Date"] = email.utils.formatdate(message.created_at, localtime=False)
        # The same for every try of one message: a reader (or a server) sees a repeat as one.
        mail["Message-ID"] = (
            f"<occurrence-message.{message.seq}.{int(message.created_at)}@{self.domain}>"
        )
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        mail.set_content(doc["text"])
        return mail

    async def send(self, message: OccurrenceMessage) -> Outcome:
        server = self.server
        try:
            mail = self.compose(message)
        except (ValueError, TypeError) as exc:  # an address or subject no header can carry
            return Outcome.of(FAILED, f"not a message e-mail can carry: {exc}")
        try:
            async with asyncio.timeout(self.timeout):
                _, answer = await aiosmtplib.send(
                    mail,
                    hostname=server.host,
                    port=server.port,
                    username=server.username,
                    password=server.password,
                    use_tls=server.tls,
                    start_tls=False if server.tls else None,
                    timeout=self.timeout,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code = refused.code if refused else 550
            state = FAILED if code >= 500 else RETRY
            return Outcome.of(state, f"the SMTP server refused the recipient: {code} {refused}")
        except aiosmtplib.SMTPDataError as exc:
            state = FAILED if exc.code >= 500 else RETRY
            return Outcome.of(
                state, f"the SMTP server refused the message: {exc.code} {exc.message}"
            )
        except aiosmtplib.SMTPResponseException as exc:
            # The sender refused, a failed log-in, a 4xx: the deployment's to put right, and
            # the message goes once it is.
            return Outcome.of(RETRY, f"SMTP server answered {exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome.of(RETRY, f"SMTP server not reached: {type(exc).__name__} {exc}")
        return Outcome.of(SENT, f"SMTP server accepted it: {answer}")

    async def aclose(self) -> None:
        pass

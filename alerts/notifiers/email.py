"""E-mail over SMTP (standard library `smtplib`, run in a thread with a socket timeout)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

from alerts.errors import DeliveryError

__all__ = ["SmtpServer", "send"]


class SmtpServer:
    """Where and how to send; the password is kept out of `repr`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"SmtpServer({self.host}:{self.port}, from={self.sender})"

    def _send_blocking(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self._password)
            smtp.send_message(message)


async def send(server: SmtpServer, to: str, subject: str, text: str) -> None:
    """Send one plain-text message to `to`; raises `DeliveryError` on failure or timeout."""
    if not server.host:
        raise DeliveryError("no SMTP server configured (ARBOR_ALERTS_SMTP_HOST)")
    message = EmailMessage()
    message["From"] = server.sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    try:
        await asyncio.wait_for(
            asyncio.to_thread(server._send_blocking, message), server.timeout_s * 2
        )
    except (OSError, smtplib.SMTPException, TimeoutError) as exc:
        raise DeliveryError(f"SMTP to {server.host}:{server.port} failed: {exc}") from exc

"""E-mail (.eml, RFC 5322) and Outlook (.msg) messages as elements, with unstructured's
partition_email and partition_msg for the body (HTML preferred over plain text).

The subject is the title and section; a header block (From, To, Cc, Date) follows it, then the
body. Attachments are not read: each message names the ones it carries in a warning, so the user
can add them as files of their own (with their own pages and citations).
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from localllm.documents.model import DocumentError, Element
from localllm.documents.partitioned import partition, to_elements

_HEADERS = ("From", "To", "Cc", "Date")
_IDENTITY = ("From", "To", "Subject", "Date", "Message-ID", "Received", "Sender")


def read_eml(path: Path, name: str) -> tuple[list[Element], list[str]]:
    message = _parse_eml(path, name)
    subject = _clean(message.get("Subject", ""))
    headers = [(h, _clean(", ".join(message.get_all(h, [])))) for h in _HEADERS]
    attachments = [_clean(part.get_filename() or "") or "unnamed" for part in _attachments(message)]
    body = partition("email", "partition_email", str(path), process_attachments=False)
    return _message(name, subject, headers, body, attachments)


def read_msg(path: Path, name: str) -> tuple[list[Element], list[str]]:
    import olefile
    from oxmsg import Message

    with olefile.OleFileIO(str(path)) as ole:
        if not ole.exists("__properties_version1.0"):
            raise DocumentError(
                f"{name}: not an Outlook message (an Office 97-2003 file of another kind?)"
            )
    try:
        message = Message.load(str(path))
        subject = _clean(message.subject)
        sender = _clean(message.sender or "")
        recipients = ", ".join(_clean(r.email_address or r.name or "") for r in message.recipients)
        sent = message.sent_date
        attachments = [_clean(a.file_name or "") or "unnamed" for a in message.attachments]
    except KeyError as e:  # a part of a recipient or attachment is gone
        raise ValueError("parts of the message are missing: a cut-off copy?") from e
    headers = [("From", sender), ("To", recipients), ("Date", sent.isoformat() if sent else "")]
    body = partition("msg", "partition_msg", str(path), process_attachments=False)
    return _message(name, subject, headers, body, attachments)


def _parse_eml(path: Path, name: str) -> EmailMessage:
    with path.open("rb") as f:
        message: Any = email.message_from_binary_file(f, policy=email.policy.default)
    if not any(message.get(h) for h in _IDENTITY):
        raise DocumentError(
            f"{name}: not an e-mail message: it has none of the headers one has (From, To, "
            "Subject, Date)"
        )
    return message  # type: ignore[no-any-return]


def _attachments(message: EmailMessage) -> list[Any]:
    if not message.is_multipart():
        return []
    return list(message.iter_attachments())


def _message(
    name: str,
    subject: str,
    headers: list[tuple[str, str]],
    body: list[Any],
    attachments: list[str],
) -> tuple[list[Element], list[str]]:
    section = subject or None
    found = to_elements(body, section=section, titles=False)
    if not found:
        also = f" (its attachments are not read: {', '.join(attachments)})" if attachments else ""
        raise DocumentError(f"{name}: the message has no body text to index{also}")
    elements = [Element(subject, None, kind="title", section=section)] if subject else []
    block = "\n".join(f"{h}: {value}" for h, value in headers if value)
    if block:
        elements.append(Element(block, None, section=section))
    elements.extend(found)
    warnings = []
    if attachments:
        n = len(attachments)
        what = "attachment was" if n == 1 else "attachments were"
        warnings.append(
            f"{name}: {n} {what} not indexed ({', '.join(attachments)}): save and add them as files"
        )
    return elements, warnings


def _clean(value: object) -> str:
    return " ".join(str(value).split())

"""What the people who care about an occurrence are told, as messages the change commits
with (store: occurrence_messages), sent afterwards by the dispatcher. Reporters are told
through the channel they gave; followers likewise; departments of breaches of their deadlines."""

from __future__ import annotations

from typing import Any

from cidade.occurrences.model import STATUSES


def contact_message(
    contact: dict[str, Any], at: str, subject: str, text: str, recipient: str
) -> dict[str, Any] | None:
    """A message to one contact ({email | phone | webhook, notify}), or None when it gave no
    channel (or asked not to be told)."""
    channel = contact.get("notify") or next(
        (c for c in ("email", "phone", "webhook") if contact.get(c)), None
    )
    if channel == "phone":
        channel = "sms"
    address = {
        "email": contact.get("email"),
        "sms": contact.get("phone"),
        "webhook": contact.get("webhook"),
    }.get(channel or "")
    if not address:
        return None
    return {
        "at": at,
        "channel": channel,
        "to": address,
        "subject": subject,
        "text": text,
        "recipient": recipient,
    }


def status_messages(
    doc: dict[str, Any],
    private: dict[str, Any],
    at: str,
    follow_url: str,
    note: str = "",
) -> list[dict[str, Any]]:
    """The reporter's and followers' messages for the occurrence's new status."""
    status = STATUSES[doc["status"]].label
    subject = f"Occurrence {doc['number']}: {status}"
    text = f"Your report {doc['number']} ({doc.get('category_name') or doc['category']}) is now: {status}."
    if note:
        text += f"\n\n{note}"
    text += f"\n\nFollow it at {follow_url}"
    out = []
    reporter = private.get("reporter") or {}
    m = contact_message(reporter, at, subject, text, "reporter")
    if m:
        m["kind"] = "status"
        m["status"] = doc["status"]
        out.append(m)
    for follower in private.get("followers") or ():
        m = contact_message(
            follower, at, subject, text.replace("Your report", "Report"), "follower"
        )
        if m:
            m["kind"] = "status"
            m["status"] = doc["status"]
            out.append(m)
    return out


def department_message(
    department: dict[str, Any], at: str, subject: str, text: str, kind: str
) -> list[dict[str, Any]]:
    out = []
    for channel, key in (("email", "email"), ("webhook", "webhook")):
        if department.get(key):
            out.append(
                {
                    "at": at,
                    "channel": channel,
                    "to": department[key],
                    "subject": subject,
                    "text": text,
                    "recipient": f"department:{department['code']}",
                    "kind": kind,
                }
            )
    return out

"""What the people who care about an occurrence are told, as messages the change commits
with (store: occurrence_messages), sent afterwards by the dispatcher (dispatch/). Reporters are
told through the channel they gave; followers likewise; departments of new tasks and of
breaches of their deadlines.

A message is a dict: ``at``, ``channel`` (email | sms | webhook), ``to`` (the address: personal
data, shown only with occurrences.contact), ``subject``, ``text``, ``recipient`` (reporter |
follower | department:<code>), ``kind`` (status | update | task | breach) and, for reporters
and followers, ``view``: the public view of the occurrence a webhook receives (number,
category, status, the update's text, the follow link), nothing about anyone.
"""

from __future__ import annotations

from typing import Any

from cidade.occurrences.model import STATUSES

# An SMS carries the gist and the link: an update's text is cut to this many characters.
SMS_NOTE = 140


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


def public_view(doc: dict[str, Any], follow_url: str, note: str = "") -> dict[str, Any]:
    """What a reporter's or follower's webhook is told of the occurrence: what anyone may see
    of it (its public page), never a contact."""
    return {
        "number": doc["number"],
        "category": doc["category"],
        "category_name": doc.get("category_name") or doc["category"],
        "status": doc["status"],
        "status_label": STATUSES[doc["status"]].label,
        "open": bool(doc.get("open")),
        "update": note or None,
        "updated_at": doc.get("updated_at"),
        "follow_url": follow_url,
    }


def status_messages(
    doc: dict[str, Any],
    private: dict[str, Any],
    at: str,
    follow_url: str,
    note: str = "",
) -> list[dict[str, Any]]:
    """The reporter's and followers' messages for the occurrence's new status (or a public
    update, ``note``, in the status it has)."""
    number = doc["number"]
    status = STATUSES[doc["status"]].label
    category = doc.get("category_name") or doc["category"]
    where = f", {doc['address']}" if doc.get("address") else ""
    subject = f"Occurrence {number} ({category}): {status}"
    view = public_view(doc, follow_url, note)

    def text(whose: str, why: str) -> str:
        body = f"News on {whose} {number} ({category}{where}): its status is {status}."
        if note:
            body += f"\n\n{note}"
        body += f"\n\nFollow it at {follow_url}\n\n--\nYou receive this because you {why}."
        return body

    sms = f"Occurrence {number} ({category}): {status}."
    if note:
        sms += " " + (note if len(note) <= SMS_NOTE else note[: SMS_NOTE - 1] + "…")
    sms += f" {follow_url}"
    out = []
    reporter = private.get("reporter") or {}
    for contact, recipient, whose, why in (
        (reporter, "reporter", "your report", "reported this problem"),
        *(
            (f, "follower", "occurrence", "follow this occurrence")
            for f in private.get("followers") or ()
        ),
    ):
        m = contact_message(contact, at, subject, text(whose, why), recipient)
        if m:
            if m["channel"] == "sms":
                m["text"] = sms
            m["kind"] = "status"
            m["status"] = doc["status"]
            m["view"] = view
            out.append(m)
    return out


def department_message(
    department: dict[str, Any], at: str, subject: str, text: str, kind: str
) -> list[dict[str, Any]]:
    """A department's messages (new task, breach) to the e-mail and webhook its configuration
    gives, if any."""
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

"""The message log of an occurrence and following one (occurrences/messages_api.py):
/occurrences/{number}/messages, /occurrences/{number}/followers."""

from __future__ import annotations

from cidade.openapi.build import (
    TENANT,
    ApiPart,
    json_body,
    json_ok,
    merge,
    operation,
    path_param,
    query,
)
from cidade.openapi.occurrences import _problem, problems
from cidade.openapi.schemas import DATE_TIME, STRING, Schema, ref

TAG = "Occurrence messages"

NUMBER = path_param(
    "number",
    "The occurrence's number.",
    schema={"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
)
NULLABLE_STRING: Schema = {"type": ["string", "null"]}

MESSAGE: Schema = {
    "type": "object",
    "description": "One message of the log: to whom, through which channel, what it said, and "
    "how sending it went (`pending`: not yet, or to be tried again at `next_at`; `sent`; "
    "`failed` for good, `result` says why).",
    "required": ["seq", "number", "channel", "to", "recipient", "state", "attempts"],
    "properties": {
        "seq": {"type": "integer", "description": "The message's number in the log."},
        "number": {"type": "integer"},
        "at": {**DATE_TIME, "description": "When the change that caused it was made."},
        "kind": {"type": "string", "enum": ["status", "update", "task", "breach"]},
        "recipient": {
            "type": "string",
            "description": "`reporter`, `follower` or `department:<code>`.",
        },
        "channel": {"type": "string", "enum": ["email", "sms", "webhook"]},
        "to": {"type": "string", "description": "The address, phone number or webhook URL."},
        "subject": STRING,
        "text": STRING,
        "state": {"type": "string", "enum": ["pending", "sent", "failed"]},
        "attempts": {"type": "integer", "minimum": 0},
        "next_at": {**NULLABLE_STRING, "description": "A pending message's next try."},
        "result": {**NULLABLE_STRING, "description": "What the last try answered."},
    },
}
MESSAGE_LOG: Schema = {
    "type": "object",
    "required": ["number", "messages", "next_after"],
    "properties": {
        "number": {"type": "integer"},
        "messages": {"type": "array", "items": ref("OccurrenceMessage")},
        "next_after": {
            "type": ["integer", "null"],
            "description": "The `after` of the next page; null on the last one.",
        },
    },
}
FOLLOW: Schema = {
    "type": "object",
    "description": "How to tell the follower: an e-mail, a phone (SMS) or a webhook (an HTTP "
    "POST of a JSON body with the public view of the occurrence); `notify` picks one when "
    "several are given (`none`: do not tell).",
    "additionalProperties": False,
    "properties": {
        "email": NULLABLE_STRING,
        "phone": NULLABLE_STRING,
        "webhook": NULLABLE_STRING,
        "notify": {"type": ["string", "null"], "enum": ["email", "sms", "webhook", "none", None]},
    },
}
FOLLOWED: Schema = {
    "type": "object",
    "required": ["number", "following"],
    "properties": {"number": {"type": "integer"}, "following": {"const": True}},
}


def occurrence_messages_part() -> ApiPart:
    return ApiPart(
        paths={
            "/occurrences/{number}/messages": {
                "get": operation(
                    "occurrenceMessages",
                    "The messages the occurrence's reporter, followers and departments were sent",
                    merge(
                        json_ok(ref("OccurrenceMessageLog"), "A page of the log, oldest first."),
                        problems(),
                        _problem(404, "No such occurrence."),
                    ),
                    tag=TAG,
                    description="Shows addresses: needs occurrences.contact; every read is audited "
                    "(occurrence.messages).",
                    parameters=[
                        NUMBER,
                        TENANT,
                        query(
                            "limit",
                            "Messages per page (default 100).",
                            {"type": "integer", "minimum": 1, "maximum": 1000},
                        ),
                        query(
                            "after",
                            "Only messages after this `seq` (the `next_after` of the page before).",
                            {"type": "integer", "minimum": 0},
                        ),
                    ],
                )
            },
            "/occurrences/{number}/followers": {
                "post": operation(
                    "addOccurrenceFollower",
                    "Follow an occurrence: be told of its changes",
                    merge(
                        json_ok(ref("OccurrenceFollowed"), "Following it.", status=201),
                        problems(413, 415),
                        _problem(404, "No such occurrence, or not one the caller may see."),
                    ),
                    tag=TAG,
                    parameters=[NUMBER, TENANT],
                    request_body=json_body(ref("OccurrenceFollow"), "The follower's contact."),
                )
            },
        },
        tags={TAG: "What reporters, followers and departments were told, and following."},
        schemas={
            "OccurrenceMessage": MESSAGE,
            "OccurrenceMessageLog": MESSAGE_LOG,
            "OccurrenceFollow": FOLLOW,
            "OccurrenceFollowed": FOLLOWED,
        },
    )

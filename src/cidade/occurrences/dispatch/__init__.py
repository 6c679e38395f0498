"""Telling reporters, followers and departments: the messages the occurrences service wrote,
sent by e-mail (SMTP), webhook or SMS (a gateway), each outcome kept in the message log.

    channel.py     Outcome (sent | retry | failed, and why); the Channel protocol
    email.py       SmtpChannel: aiosmtplib to CIDADE_SMTP_URL, from CIDADE_SMTP_FROM
    webhook.py     WebhookChannel: a JSON POST through the egress policy
    sms.py         SmsGateway (the interface a provider plugs into), HttpSmsGateway
    dispatcher.py  Dispatcher: claims due messages, sends, settles, retries with back-off
"""

from cidade.occurrences.dispatch.channel import FAILED, RETRY, SENT, Channel, Outcome
from cidade.occurrences.dispatch.dispatcher import Dispatcher, channels_from_settings

__all__ = ["FAILED", "RETRY", "SENT", "Channel", "Dispatcher", "Outcome", "channels_from_settings"]

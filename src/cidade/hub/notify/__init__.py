"""Notifications of NGSI-LD subscriptions: matching changes inside the write transaction
(``matching``), rendering (``payload``), sending over HTTP and MQTT (``senders``) and the
at-least-once, per-endpoint delivery loop (``delivery``)."""

from cidade.hub.notify.delivery import Notifier

__all__ = ["Notifier"]

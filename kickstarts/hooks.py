"""The ``server.webhooks`` spec key: where to POST which host events, and the signing secret."""

from __future__ import annotations

from dataclasses import dataclass

from photonkick.kickstarts.fields import (
    Field,
    Parser,
    Reader,
    choice,
    list_of,
    read_checked,
    secret,
)
from photonkick.kickstarts.secrets import Secret
from photonkick.kickstarts.source import Node

WEBHOOK_EVENTS = tuple(
    "vm_created dhcp config kernel initrd kickstart repo installed local_boot firstboot ready "
    "failed rearmed".split()
)
"""Timeline events a webhook may subscribe to: the timeline's install phases in order, then
``failed`` and ``rearmed`` (a test keeps this equal to the timeline's own list)."""
DEFAULT_EVENTS = ("ready", "failed")


@dataclass(frozen=True)
class Webhook:
    """One receiver: its URL, the events it gets and the secret that signs each body."""

    url: str
    secret: Secret
    events: tuple[str, ...] = DEFAULT_EVENTS


def webhooks_parser(url: Parser[str]) -> Parser[tuple[Webhook, ...]]:
    """A parser for the ``server.webhooks`` list; ``url`` parses each receiver's URL."""
    fields = {
        "url": Field(url, required=True),
        "events": Field(list_of(choice(*WEBHOOK_EVENTS), allow_empty=False), DEFAULT_EVENTS),
        "secret": Field(secret, required=True),
    }

    def one(reader: Reader, node: Node, path: str) -> Webhook:
        values = read_checked(reader, node, path, fields)
        return Webhook(values["url"], values["secret"], tuple(dict.fromkeys(values["events"])))

    return list_of(one)

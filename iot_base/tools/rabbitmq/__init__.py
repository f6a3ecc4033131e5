# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What RabbitMQ 3.10's MQTT plugin does with topics, stated once; every
RabbitMQ path of the addon (HTTP backend, console tokens, internal-user
store) imports it from here. Plain Python, no Odoo import.

Read from rabbitmq_mqtt 3.10.8's ``rabbit_mqtt_util`` (Debian's
rabbitmq-server 3.10.8, ``mqtt.sparkplug`` off; checked with ``erl`` on its
beam): ``get_topic_translation_funs/0`` turns an MQTT topic (or filter) into
a routing (or binding) key by replacing ``/`` with ``.`` and ``+`` with
``*``, ``#`` kept, and a key back into a topic by the reverse (``*`` → ``+``,
``.`` → ``/``); ``subcription_queue_name/1`` names a client's queues.

A ``.`` inside an MQTT level is not swapped: it becomes a word separator, so
``a.b/c`` and ``a/b/c`` are one routing key. Hence:

* the addon judges a routing key by its one MQTT reading,
  :func:`routing_key_to_mqtt` (no ``.`` left in it);
* a username holding ``.`` is refused on RabbitMQ (:func:`username_problem`):
  ``ns/${username}/#`` of ``dev`` is the key pattern ``ns.dev.#``, which holds
  every key of ``dev.1``;
* a rule with a ``.`` inside a literal level cannot be written as keys
  without also meaning other topics: :func:`routing_key_rules` leaves such an
  allow out and makes such a deny cover the key it names.
"""

import dataclasses

from .. import topic_acl

# rabbitmq_mqtt's ``mqtt.exchange`` (default): every MQTT publish and binding
EXCHANGE = "amq.topic"
# rabbit_mqtt_util:subcription_queue_name/1: one queue per client and QoS
QUEUE_PREFIX = "mqtt-subscription-"
QUEUE_SUFFIXES = ("qos0", "qos1")
# why a username is refused on RabbitMQ (username_problem)
DOTTED_USERNAME = "dotted_username"


def to_routing_key(topic):
    """The routing (or binding) key of an MQTT topic name (or filter)."""
    return topic.replace("/", ".").replace("+", "*")


def routing_key_to_mqtt(routing_key):
    """The MQTT topic (or filter) the addon reads a routing key as: the
    plugin's own reading. A literal ``*`` of a topic reads as ``+`` (a
    publish to it is refused, a subscription judged by what it receives)."""
    return routing_key.replace("*", "+").replace(".", "/")


def username_problem(username):
    """:data:`DOTTED_USERNAME` when ``username`` cannot be given anything on
    RabbitMQ (a ``.`` would put its own levels inside another's key space),
    else None."""
    return DOTTED_USERNAME if "." in (username or "") else None


def dotted(rule):
    """Whether a literal level of ``rule`` holds a ``.``."""
    return any("." in level for level in rule.levels if level not in ("+", "#"))


def routing_key_rules(rules):
    """``rules`` (expanded, first match) as RabbitMQ can apply them to keys:
    an allow with a ``.`` in a literal level is left out (its key also names
    other topics: ``a.b`` is ``a/b``), a deny gets ``/`` for that ``.`` (it
    refuses the very key it names). Never more permissive: only allows go."""
    out = []
    for rule in rules:
        if dotted(rule):
            if rule.permission == topic_acl.ALLOW:
                continue
            levels = (
                level if level in ("+", "#") else level.replace(".", "/")
                for level in rule.levels
            )
            rule = dataclasses.replace(rule, topic="/".join(levels))
        out.append(rule)
    return out

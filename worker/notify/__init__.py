"""Notifications: every outgoing event, delivered to the systems and people subscribed to it.

    outbox (tw:outbox) --dispatcher--> deliveries (tw:delivery:*, due index) --deliver actor-->
        webhook (signed CloudEvent over HTTP) | e-mail (SMTP)

Deliveries are durable records with a retry schedule: a crash at any point loses none and
repeats none that succeeded.
"""

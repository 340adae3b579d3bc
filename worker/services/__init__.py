"""What the CLI asks of tokenwarden, as functions of the stores: each command calls one of these
(or registry, handling, scan), so no command reaches into a store or names a Redis key.

    notifications.py  subscriptions and deliveries
    estate.py         servers, tokens, replacements, the audit trail, sealed secrets
"""

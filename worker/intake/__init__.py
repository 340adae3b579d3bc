"""The HTTP intake (`tokenwarden serve`): directories and event buses push what happened.

It only authenticates, validates and enqueues; the workers decide. One *source* per sender
(`tokenwarden sources add`), of one kind: CloudEvents over HTTP, Okta event hooks, or SCIM 2.0
provisioning (Okta, Entra ID).
"""

"""Asking directories (Okta, Entra ID, Google Workspace) about the people who downloaded the
current tokens: one client per kind of source that polls (base.py says what each answers)."""

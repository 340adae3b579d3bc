"""Every reason a replacement can hold reads as a sentence in the e-mail, never as a type."""

from __future__ import annotations

import pytest

from events import catalog
from worker.notify.email import compose


@pytest.mark.parametrize("kind", sorted(catalog.URGENCY_BY_TYPE))
def test_each_reason_is_told_in_words(kind):
    reason = {"type": kind, "time": "2026-11-28T09:00:00Z", "count": 1, "urgency": "planned"}
    event = {
        "id": "e1",
        "type": catalog.REPLACEMENT_REQUIRED,
        "data": {
            "server": "Lab",
            "reasons": [reason],
            "urgency": "planned",
            "expires_at": "2027-01-01T00:00:00Z",
            "downloaded_by": "a@school.example",
            "renewal": {"renew_before_days": 30, "due_at": "2026-12-02T00:00:00Z"},
        },
    }
    text = compose(event, "tw@x.example", "it@x.example").get_body().get_content()
    assert kind not in text
    assert "Why: " in text

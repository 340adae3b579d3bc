"""Apple's device enrollment service: who downloaded a token, and whether Apple still accepts it.

`verdicts.py` holds what a check comes to; `client.py` asks Apple (OAuth 1.0a session, then
`GET /account`); `classify.py` turns an answer into a verdict.
"""

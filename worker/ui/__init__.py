"""The read-only web pages `tokenwarden serve` serves under /ui/ when TOKENWARDEN_UI=on:
who may look (access.py, viewers.py, session.py), the headers every answer carries
(security.py), and the pages (pages.py, render.py, templates/, static/)."""

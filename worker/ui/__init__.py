"""The web pages under /ui/ of `tokenwarden serve`: read-only, server-rendered HTML.

- pages.py: the routes (each behind the access check) and what each page reads;
- reads.py: the reads, through the stores (run in the thread pool, off the event loop);
- views/: what each page shows, as pure functions of the records read and `now`;
- render.py, templates/, static/: the HTML and its stylesheet (no script, no inline style).
"""

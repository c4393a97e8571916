"""``tasklog serve``: a live web dashboard over a log's read model, its JSON API, ``/metrics``.

An edge over ``projections`` and the views: ``source`` (what it reads, caught up per commit),
``tasks`` (every task's times as arrays, kept current), ``answers``/``lanes``/``metrics`` (what
each page and scrape gets), ``server`` (the worker thread and the live feed), ``guard`` (the
token and the headers), ``app`` (the routes) and ``run`` (binding, and a Hub's child). Needs the
``serve`` extra (Starlette, uvicorn, prometheus_client, numpy; pyarrow for downloads).
"""

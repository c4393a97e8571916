"""Views of a log for people: ``report`` (HTML), ``timeline`` (engines against time), ``story``
(one task's events) and ``jsonfmt`` (MongoDB Extended JSON, as every command prints).

They read the log core only and share its lifecycle reducer (``tasklog.lifecycle``).
"""

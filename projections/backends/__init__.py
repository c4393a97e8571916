"""The projection backends, siblings behind the ``Projection`` contract (``projections.base``).

``dict`` (``DictProjection``: in memory, indexed), ``none`` (``NoProjection``: keeps nothing),
``sqlite`` (``SQLiteProjection``) and ``mongo`` (``MongoProjection``); ``sortedindex`` is the
dict backend's range index. ``projections.open(spec)`` picks one; none imports another.
"""

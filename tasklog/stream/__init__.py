"""A log past one machine: NATS JetStream.

``wire`` (the message format and the client), ``ship`` (publish a log's events; ``Shipping`` runs
``shipper`` in a child beside a writer), ``restore`` (a log back from a stream), ``feed`` (fold a
stream of many hubs into a projection: the only module here that imports ``projections``) and
``stopping`` (run a stream coroutine until done or a signal).
"""

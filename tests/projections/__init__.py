"""Projections: the fold, each backend against one contract, the query language, live attachment, replay."""

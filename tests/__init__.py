"""The test suite, by area: log, projections, stream, hub, cli, views; helpers in ``support``."""

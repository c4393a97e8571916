"""Views of a log: report, story, timeline."""

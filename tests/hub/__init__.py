"""ipyparallel: TaskLogDB under its own test suite, a real cluster, and the Hub's calls."""

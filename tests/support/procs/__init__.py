"""Processes the tests start by path: a writer to kill mid-run, a projection fold to kill, a fork holder, a Hub."""

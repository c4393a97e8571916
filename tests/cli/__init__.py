"""The tasklog command as a user meets it."""

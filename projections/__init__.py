"""Projections: fold the tasklog event log into queryable TaskRecords."""

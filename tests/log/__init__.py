"""The log core: codec, appends, crashes, damage, read-only logs, full disks, memory,
retention, the lifecycle, the per-task streams."""

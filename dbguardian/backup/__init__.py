"""Taking backups: the routines the backup job kind (and restore's safety backup) call.

- :mod:`~dbguardian.backup.logical` — pg_dump in an exported snapshot, streamed through compression,
  encryption and a checksum into every storage of the target, manifest last.
- :mod:`~dbguardian.backup.physical` — a base backup: pg_basebackup's tar stream through the same
  stages into every storage, committed once the WAL from its start to its stop LSN is archived there.
- :mod:`~dbguardian.backup.codec` — the pipeline's write stages built from a target's policy.

The backup job kind chooses by the schedule's ``kind``; ``backup --physical`` takes a manual base backup.
"""

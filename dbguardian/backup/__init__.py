"""Taking backups: the routines the backup job kind (and restore's safety backup) call.

- :mod:`~dbguardian.backup.logical` — pg_dump in an exported snapshot, streamed through compression,
  encryption and a checksum into every storage of the target, manifest last.
- :mod:`~dbguardian.backup.codec` — the pipeline's write stages built from a target's policy.

Physical base backups (pg_basebackup) will be a sibling module; the job kind chooses by the schedule's
``kind``.
"""

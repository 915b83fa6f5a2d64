"""Job kinds: one module each (backup, prune, health, drill, verify), registered in :mod:`.registry`.

A kind exposes ``KIND`` (:class:`.outcome.JobKind`): the job specs it derives from the policy and
``async run(ctx, spec) -> JobOutcome``. The runner (:mod:`dbguardian.runner`) applies the outcomes.
"""

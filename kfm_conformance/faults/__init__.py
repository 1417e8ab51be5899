"""Fault injection for the crash-consistency guarantees: ``atomic-publication`` and, where the
run-state is involved, ``idempotency``.

The pipeline is a black box. The harness observes what it does to the file system with
``strace`` and perturbs it from the outside:

- :mod:`.strace` probes whether ``strace`` works here, builds its command lines and parses its
  output into typed system-call records;
- :mod:`.crash` enumerates crash points from the trace of one publishing run and kills the
  pipeline at each of them (``strace`` holds the chosen system call on entry, the harness sends
  ``SIGKILL`` to the run), then
  checks the crash-consistency oracle; it also kills runs at seeded random moments, which needs
  no ``strace``;
- :mod:`.ioerror` makes one chosen ``write``, ``fsync`` or ``rename`` fail with ``ENOSPC`` or
  ``EIO``, aimed at the file and the process that makes it (strace's path filter);
- :mod:`.lint` reads the durable-publication protocol off a trace, following files by inode
  (the output replaced by a rename and never written in place; as recommendations: fsync,
  directory fsync, the run-state changed last);
- :mod:`.campaign_cache` runs each crash campaign once per certification, for every scenario
  that judges it;
- :mod:`.requests` attributes the origin's requests to runs (one function, shared);
- :mod:`.concurrency` runs two instances in one working directory while the upstream changes,
  and polls the output from a reader thread.

Library functions return typed results and :class:`~kfm_conformance.verdict.Finding` objects;
the steps in :mod:`kfm_conformance.steps.faults` hand them to the scenario's judge.
"""

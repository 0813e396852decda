"""Chaos-testing harness: processes to fault, a recorded workload, live streams and a checker.

The method is Jepsen's: concurrent clients record a *history* (each operation ``invoke``, then
``ok``, ``fail`` or ``info``), a *nemesis* kills, pauses or stops processes, and after every
fault has healed and the system has drained, a *checker* reads everything back and counts what
was lost, duplicated or unexpected (see ``tests/chaos/README`` in the main README).
"""

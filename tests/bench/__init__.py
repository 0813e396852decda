"""`make bench`: throughput, CPU, latency, backlog, catch-up, memory and REST figures of the real
system, each next to a bare baseline measured in the same run (``python -m tests.bench``)."""

"""`make up`: embedded Valkey plus the four services as child processes, until Ctrl-C."""

"""System tests: `make up` (the launcher) and docker-compose.yml."""

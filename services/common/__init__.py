"""Runtime shared by every Missive service: settings, logging, Redis, gRPC, process runner."""

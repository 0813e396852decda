"""UserService's gRPC transport adapter."""

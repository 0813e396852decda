"""FrontendService's gRPC transport adapter."""

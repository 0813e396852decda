"""MessageService gRPC adapter."""

"""NotificationService gRPC adapter."""

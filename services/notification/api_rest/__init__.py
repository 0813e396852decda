"""NotificationService REST adapter."""

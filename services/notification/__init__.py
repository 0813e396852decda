"""NotificationService: notifications of new messages, their read state and user subscriptions."""

"""MessageService: one-to-one messages between registered users, grouped into conversations."""

"""UserService's REST transport adapter."""

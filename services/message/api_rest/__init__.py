"""MessageService REST adapter."""

"""FrontendService: shows notifications in real time to the connected clients of each user."""

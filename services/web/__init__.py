"""The web inbox: server-rendered pages and a live channel, a client of the four services."""

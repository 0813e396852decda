"""Missive's microservices and the runtime code they share."""

"""Code generator: turns the .proto and OpenAPI contracts into stubs, REST code and the SDK."""

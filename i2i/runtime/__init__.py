"""Runtime: engines behind one interface, the dynamic batcher, the HTTP server."""

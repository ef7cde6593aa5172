"""Runtime: engines behind one interface, the dynamic batcher, the HTTP server (KServe v2 and
/v1/translate), and offline folder translation. Never imports i2i.train."""

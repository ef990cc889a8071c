"""vpopmaild: vpopmail's admin protocol on stdin/stdout, started by tcpserver (protocol only)."""

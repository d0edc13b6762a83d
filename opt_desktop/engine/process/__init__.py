"""The engine in another process: the wire protocol, the child's main loop, the parent's proxy."""

"""The engine elsewhere: the wire protocol, its transports, the child's main loop, the window's side of it."""

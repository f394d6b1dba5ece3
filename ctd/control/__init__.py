"""The control socket: wire protocol, access policy, server, command handlers."""

"""The two daemons and their process plumbing: event loop, control socket, options,
configuration, status, key log.
"""

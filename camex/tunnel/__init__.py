"""What serves both protocols (the server mux) and the client core that drives both
(--protocol auto). Free of I/O.
"""

"""camex v2: the secure protocol (Noise_NNpsk0 handshake, indexed sessions).

Everything here is free of I/O ("sans-I/O"): datagrams and a clock go in,
datagrams to send, inner packets to deliver and timer deadlines come out.
The daemon (camex/daemon.py, camex/core) owns sockets, the TUN and the loop.

Modules:
- noise:   Noise SymmetricState/CipherState/HandshakeState (checked against
           the published test vectors);
- kdf:     passphrase -> 32-byte PSK with scrypt, computed once per key;
- wire:    every v2 message, byte by byte (pack/parse), payload TLVs;
- replay:  the 2048-packet sliding replay window;
- session: one established session: per-direction keys, counters, batching;
- cookie:  WireGuard-style stateless cookies (server) and their use (client);
- client:  ClientSession, the client's state machine;
- server:  V2Server, the server's state machine, peers, identity binding;
- events:  what the state machines return (Send, Deliver, Up, Down, ...);
- core:    V2ClientCore / AutoClientCore / V2ServerCore: the same surface as
           the legacy cores in camex/core, for the daemons;
- memlab:  an in-memory network for tests and sample traffic.
docs/PROTOCOL.md is the specification.
"""

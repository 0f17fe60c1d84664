"""camex v2: the secure protocol (Noise_NNpsk0 handshake, indexed sessions).

Everything here is free of I/O ("sans-I/O"): datagrams and a clock go in,
datagrams to send, inner packets to deliver and timer deadlines come out.
The daemons (camex.daemon) own sockets, the TUN and the loop.

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
- core:    V2ClientCore / V2ServerCore: the cores the daemons drive
           (camex.base.contract; AutoClientCore is in camex.tunnel.client);
- bulk:    BULK records and super-packets, FastReceiver (per-fragment path);
- framing: GSO runs of datagrams, BULK frames cut and glued, reassembly;
- lone:    the flat lone-datagram paths (held to the full ones by tests).
docs/PROTOCOL.md is the specification.
"""

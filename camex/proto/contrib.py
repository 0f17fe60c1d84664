# scapy.contrib.description = camex tunnel (CX2P legacy, later versions)
# scapy.contrib.status = loads
"""What Scapy loads as `scapy.contrib.camex` (load_contrib("camex")).

Registered by camex.proto.scapy_ext; importing camex.proto binds the layers.
"""

from camex.proto import *  # noqa: F401,F403  (re-export the layers)

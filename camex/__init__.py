__version__ = "0.1.0"


def scapy_ext(plg):
    """Scapy's extension hook: `conf.exts.load("camex")` then `load_contrib("camex")`.

    Imports Scapy only when Scapy itself calls this (never on the data path).
    """
    from camex.proto import scapy_ext as _register

    _register(plg)

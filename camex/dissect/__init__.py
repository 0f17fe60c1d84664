"""camex-dissect: reads captures of legacy and v2 traffic (cli.main is the entry point).
"""

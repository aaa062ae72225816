"""Agentia beside a peer real-time server (Centrifugo): one client, two protocol adapters.

``wsclient`` is the raw asyncio WebSocket client both servers are measured with;
``adapters`` speaks each server's protocol over it; ``servers`` starts and feeds the servers;
``clientproc`` is one client process, ``harness`` drives them and meters the server,
``report`` computes medians and ratios. ``loadtest/bench_peer.py`` runs the comparison.
"""

"""The Locust load suite of Agentia: a gevent WebSocket client, locustfiles and a runner.

``wsconn``, ``counters``, the Users (``wsuser``, ``chatuser``, ``streamuser``) and the
locustfiles (``storm``, ``chat``) import Locust, which monkey-patches the
standard library with gevent: they run only inside Locust's own processes. ``run`` and
``results`` never import Locust; ``run`` starts it as a child process.
"""

"""The control plane (`agentia api`): health, readiness, metrics, tokens, history, the page.

Imports the floors below it (kernel, sessions, gateway.auth, voice routes); see
docs/architecture.md#layout.
"""

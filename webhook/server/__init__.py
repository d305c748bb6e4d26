"""The HTTPS webhook: the ASGI app, the AdmissionReview envelope, connection limits, shutdown, metrics,
certificate and configuration reload, and `podpatterns serve` that wires them. Never imports the CLI.
"""

"""Everything that talks to the Kubernetes API: the client, the cluster version, the Namespace cache,
the certificate Secret and the webhook configuration. Imports the core and the catalog, never the server or the CLI.
"""

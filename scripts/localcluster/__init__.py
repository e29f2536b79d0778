"""The project's own single-node Kubernetes cluster (``scripts/local-cluster.sh``)."""

"""Lakehouse maintenance: a daily job that compacts, rewrites manifests and expires snapshots."""

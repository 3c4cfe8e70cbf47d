"""Formats on disk, below every stage: document shards, token shards and the token stream over them,
chat messages and the TRL-format dataset files. Imports only `components.core`."""

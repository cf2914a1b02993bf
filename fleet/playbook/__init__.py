"""Playbooks: their schema and templates, secrets, and running them over the inventory."""

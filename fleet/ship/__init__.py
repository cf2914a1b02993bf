"""Shipping images to hosts: what each host lacks, streamed over SSH or through a registry."""

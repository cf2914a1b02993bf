"""Hosts: the inventory (Ansible's YAML and INI formats) and host patterns."""

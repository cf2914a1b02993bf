"""fleet: roll a layered GPU framework image out to a lab's machines over SSH."""

__version__ = "0.1.0"

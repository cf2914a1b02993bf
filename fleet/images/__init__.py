"""Images: the project's settings, git identity, labels, builds, the local engine, build hosts."""

"""Operations on a host: facts, the run command, deploy, audit, provisioning, views."""

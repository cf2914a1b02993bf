# Layer 3: the framework itself, on top of its base image (layer 2). `fleet build` rebuilds
# it on every commit and tags it <repository>:<tag_prefix>.<commits reachable from HEAD>.
# The build context holds only this file and framework/ (fleet_image.context).
ARG BASE_IMAGE=cauchy_base:latest
FROM ${BASE_IMAGE}

WORKDIR /opt/cauchy
COPY framework/ /opt/cauchy/
RUN python3 -m compileall -q /opt/cauchy
EXPOSE 8339
CMD ["python", "cauchy_services.py", "--port", "8339"]

# Build facts, passed by `fleet build` (which also sets the same labels itself). Last, so
# that they never invalidate the cache of the steps above.
ARG BUILD_DATE=unknown
ARG NAME=cauchy
ARG DESCRIPTION=""
ARG VENDOR=""
ARG URL=""
ARG VCS_URL=""
ARG VCS_REF=unknown
ARG VCS_REVISION=unknown
ARG VCS_BRANCH=""
ARG VERSION=unknown
ARG TAG=unknown
ARG DOCKER_CMD=""
ARG BASE_NAME=""
ARG BASE_DIGEST=""
ENV CAUCHY_VERSION=$VERSION \
    CAUCHY_TAG=$TAG \
    CAUCHY_COMMIT=$VCS_REVISION \
    CAUCHY_BUILD_DATE=$BUILD_DATE
LABEL org.label-schema.schema-version="1.0" \
      org.label-schema.build-date="$BUILD_DATE" \
      org.label-schema.name="$NAME" \
      org.label-schema.description="$DESCRIPTION" \
      org.label-schema.vendor="$VENDOR" \
      org.label-schema.url="$URL" \
      org.label-schema.vcs-url="$VCS_URL" \
      org.label-schema.vcs-ref="$VCS_REF" \
      org.label-schema.vcs-branch="$VCS_BRANCH" \
      org.label-schema.version="$VERSION" \
      org.label-schema.docker.cmd="$DOCKER_CMD" \
      org.opencontainers.image.created="$BUILD_DATE" \
      org.opencontainers.image.title="$NAME" \
      org.opencontainers.image.description="$DESCRIPTION" \
      org.opencontainers.image.vendor="$VENDOR" \
      org.opencontainers.image.url="$URL" \
      org.opencontainers.image.source="$VCS_URL" \
      org.opencontainers.image.revision="$VCS_REVISION" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.base.name="$BASE_NAME" \
      org.opencontainers.image.base.digest="$BASE_DIGEST"

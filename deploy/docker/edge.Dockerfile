# The edge daemon as a container (for simulated stores and x86 gateways; on a Raspberry Pi
# prefer the systemd unit in deploy/systemd, see docs/edge.md).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY protocols protocols
COPY edge edge
COPY simulators simulators
COPY storegate storegate
COPY cloud cloud
COPY bench bench
# A fixed uid: the TLS keys mounted from deploy/certs are chown-ed to it (docs/security.md).
RUN pip install ".[edge]" \
    && useradd --system --uid 10001 --home /var/lib/storegate-edge storegate \
    && mkdir -p /var/lib/storegate-edge && chown storegate /var/lib/storegate-edge
USER storegate
VOLUME /var/lib/storegate-edge
ENTRYPOINT ["storegate", "edge"]
CMD ["--config", "/etc/storegate/edge.yaml"]

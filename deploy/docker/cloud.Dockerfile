# The cloud (ingestor, state, time-series pump, API) as a container.
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
RUN pip install ".[cloud]" \
    && useradd --system --uid 10001 --home /var/lib/storegate-cloud storegate \
    && mkdir -p /var/lib/storegate-cloud && chown storegate /var/lib/storegate-cloud
USER storegate
WORKDIR /var/lib/storegate-cloud
VOLUME /var/lib/storegate-cloud
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["storegate", "cloud"]
CMD ["--config", "/etc/storegate/cloud.yaml"]

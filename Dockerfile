# convhub: gRPC on 50051, REST on 8080, SQLite in /var/lib/convhub unless CONVHUB_DATABASE_URL is set.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY gen ./gen
COPY server ./server
COPY client ./client
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/convhub --uid 10001 convhub
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER convhub
WORKDIR /var/lib/convhub
ENV CONVHUB_DATA_DIR=/var/lib/convhub \
    CONVHUB_GRPC_ADDRESS=0.0.0.0:50051 \
    CONVHUB_HTTP_ADDRESS=0.0.0.0:8080 \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/convhub"]
EXPOSE 50051 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["convhub", "health", "--address", "127.0.0.1:50051"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["convhub"]
CMD ["serve"]

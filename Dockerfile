# syntax=docker/dockerfile:1
# accel-dns container image: the release binary on distroless, non-root, read-only root friendly.
#
#   docker build -t registry.example.com/accel-dns:0.1.0 .
#
# BuildKit is required (the default builder since Docker 23): it keeps the binary's file
# capability across COPY --from, which the legacy builder drops. CI cannot run Docker; it runs the
# same `cargo build --locked --release` so a build that would fail here fails there first.

FROM rust:1-bookworm AS build
WORKDIR /src
# setcap (libcap2-bin) gives the binary cap_net_bind_service as a file capability: a non-root
# process in a container gets no ambient capabilities from Kubernetes, so this is how it binds
# port 53 (the pod must still allow the capability: securityContext add NET_BIND_SERVICE).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release \
    && install -D -m 0755 target/release/accel-dns /out/accel-dns \
    && setcap cap_net_bind_service=+ep /out/accel-dns

# glibc and libgcc for the Rust binary, nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="accel-dns" \
      org.opencontainers.image.description="DNS forwarding proxy that answers registry names with accelerated addresses" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/accel-dns /usr/local/bin/accel-dns
# A mapping-free default; deployments mount their own file (a ConfigMap as the directory).
COPY deploy/docker/accel-dns.toml /etc/accel-dns/accel-dns.toml
# Numeric, so that the kubelet can verify runAsNonRoot (65532 is distroless's "nonroot").
USER 65532:65532
EXPOSE 53/udp 53/tcp 9553/tcp
ENTRYPOINT ["/usr/local/bin/accel-dns"]
CMD ["serve", "--config", "/etc/accel-dns/accel-dns.toml"]

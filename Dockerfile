# syntax=docker/dockerfile:1
#
# The Clawx image: one `clawx` binary for every role (`clawx serve <role>`, `clawx migrate`).
#
#   docker build -t clawx:dev .
#   docker run --rm --read-only --tmpfs /tmp clawx:dev --help
#
# The build stage compiles the workspace's dependencies in a layer of their own (keyed on the
# manifests and Cargo.lock only), then the sources. The runtime image is distroless: glibc, CA
# certificates and tzdata, no shell, no package manager, a non-root user (65532). Nothing is
# written at run time (PostgreSQL and Redis hold all state), so the root filesystem can be
# read-only; a writable /tmp is mounted by the Helm chart in case a library wants one.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies. Only the manifests and stub sources: this layer is rebuilt when Cargo.toml,
#    Cargo.lock or a member's Cargo.toml changes, not when the sources do. The stubs give every
#    target a manifest declares (benches included) a file, so the whole workspace loads.
#    proto's build.rs is a stub too: its build-dependencies (protox, tonic-prost-build) are
#    compiled here, the real one runs with the sources. The stubs' own artifacts are removed
#    afterwards, so the real sources below are always compiled (their files may be older than
#    the stubs, and cargo compares modification times).
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY common/Cargo.toml common/
COPY identity-svc/Cargo.toml identity-svc/
COPY messaging-svc/Cargo.toml messaging-svc/
COPY groups-svc/Cargo.toml groups-svc/
COPY verify-svc/Cargo.toml verify-svc/
COPY gateway/Cargo.toml gateway/
COPY clawx/Cargo.toml clawx/
COPY tests/Cargo.toml tests/
RUN set -eux; \
    for crate in proto common identity-svc messaging-svc groups-svc verify-svc gateway clawx tests; do \
        mkdir -p "$crate/src"; \
        : > "$crate/src/lib.rs"; \
    done; \
    mkdir -p identity-svc/benches tests/benches; \
    for stub in clawx/src/main.rs proto/build.rs identity-svc/benches/signatures.rs tests/benches/gateway.rs tests/benches/messaging.rs; do \
        echo 'fn main() {}' > "$stub"; \
    done; \
    cargo build --release --locked -p clawx; \
    rm -rf target/release/.fingerprint/clawx* target/release/build/clawx* target/release/deps/*clawx* \
        target/release/clawx target/release/libclawx*; \
    rm -rf proto common identity-svc messaging-svc groups-svc verify-svc gateway clawx tests

# 2. Sources: the .proto files (proto/build.rs compiles them with protox, no protoc needed) and
#    the SQL migrations are embedded in the binary at build time.
COPY proto proto
COPY common common
COPY identity-svc identity-svc
COPY messaging-svc messaging-svc
COPY groups-svc groups-svc
COPY verify-svc verify-svc
COPY gateway gateway
COPY clawx clawx
COPY tests tests
RUN cargo build --release --locked -p clawx \
    && install -D -m 0755 target/release/clawx /out/clawx \
    && /out/clawx --version

# 3. Runtime.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="clawx" \
      org.opencontainers.image.description="Self-hosted messaging, identity and verification backend: every role in one binary"
COPY --from=build /out/clawx /usr/local/bin/clawx
USER 65532:65532
# gateway (REST, gRPC, grpc-web); identity, messaging, groups, verify (gRPC).
EXPOSE 8080 50051 50052 50053 50054
ENTRYPOINT ["clawx"]
CMD ["--help"]

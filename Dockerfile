# doltgate container image.
#
#   docker build -t registry.example.com/doltgate:0.1.0 .
#
# The binary is built by `cargo build --release --locked --bin doltgate`,
# exactly, against the committed Cargo.lock (--locked fails rather than
# resolve new versions). The runtime image has no shell and no package
# manager: only glibc, libgcc, OpenSSL's libcrypto and the binary, run as an
# unprivileged user.

# Builder: the official Rust image (Debian bookworm, matching the runtime's
# glibc, with OpenSSL's headers). protoc comes vendored through the build
# script; nothing else is needed.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin doltgate

# Runtime: distroless with the C runtime (doltgate links glibc, libgcc_s and
# libcrypto, all in this image).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/doltgate /doltgate
# 65532 is distroless's "nonroot"; numeric so Kubernetes can check runAsNonRoot.
USER 65532:65532
# 50051: gRPC and table-file HTTP (listener.address); 9090: /metrics,
# /healthz and /readyz (admin.address). The configuration file decides both;
# these are the values deploy/ uses.
EXPOSE 50051 9090
# Mount the configuration at /etc/doltgate/doltgate.toml (deploy/ does so
# from a ConfigMap). SIGTERM drains gracefully (listener.drain_delay and
# listener.drain_timeout); SIGHUP reloads the file.
ENTRYPOINT ["/doltgate", "--config", "/etc/doltgate/doltgate.toml"]

# syntax=docker/dockerfile:1
# The promptops image: one static-ish binary on a slim Debian, running as a non-root user.
# Build: docker build -t promptops .   Run: docker run -p 8080:8080 promptops
# scripts/build-image builds the same layout without Docker (tests/helm checks they agree).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY benches benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin promptops \
 && rm -rf src
COPY src src
COPY migrations migrations
COPY templates templates
COPY static static
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin promptops

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/promptops --create-home promptops
COPY --from=build /src/target/release/promptops /usr/local/bin/promptops
COPY config /etc/promptops/config
ENV PROMPTOPS_LISTEN=0.0.0.0:8080 \
    PROMPTOPS_CONFIG_DIR=/etc/promptops/config \
    PROMPTOPS_DATABASE_URL=sqlite:///var/lib/promptops/data/promptops.db
USER 10001:10001
WORKDIR /var/lib/promptops
EXPOSE 8080
# No curl in the image: the binary probes itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["promptops", "probe", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["promptops"]
CMD ["serve"]

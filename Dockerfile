# The syncline binary for docker-compose.yml (users' machines; CI here has no Docker engine).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin syncline

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/syncline /usr/local/bin/syncline
ENTRYPOINT ["syncline"]
